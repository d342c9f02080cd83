//! Clocks. Everything that needs the time asks a [`Clock`]: the system clock in production, a
//! manual clock in tests (time moves only when the test moves it, so tests never sleep), and a
//! simulated clock for demos and rehearsals (starts at a chosen instant and runs N times faster).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::watch;
use tokio::time::Instant;

/// The longest a system-clock sleep lasts before the time is read again, so a wall-clock jump
/// (NTP, a suspended VM) delays a timer by at most this much.
const MAX_SLEEP: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub enum Clock {
    System,
    Manual(ManualClock),
    Simulated(SimulatedClock),
}

impl Clock {
    /// `system`, `manual:TIME` or `sim:TIME[,speed=N]`, TIME in RFC 3339
    /// (`sim:2024-03-25T08:00:00+07:00,speed=3600`).
    pub fn parse(spec: &str) -> Result<Clock, String> {
        if spec == "system" {
            return Ok(Clock::System);
        }
        let start = |text: &str| {
            DateTime::parse_from_rfc3339(text)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| format!("{text:?} is not an RFC 3339 time ({e})"))
        };
        if let Some(rest) = spec.strip_prefix("manual:") {
            return Ok(Clock::Manual(ManualClock::new(start(rest)?)));
        }
        if let Some(rest) = spec.strip_prefix("sim:") {
            let (time, speed) = match rest.split_once(',') {
                None => (rest, 1.0),
                Some((time, option)) => {
                    let value = option.strip_prefix("speed=").ok_or_else(|| {
                        format!("unknown clock option {option:?}; expected speed=N")
                    })?;
                    let speed: f64 = value
                        .parse()
                        .ok()
                        .filter(|s: &f64| s.is_finite() && *s > 0.0)
                        .ok_or_else(|| format!("speed {value:?} must be a positive number"))?;
                    (time, speed)
                }
            };
            return Ok(Clock::Simulated(SimulatedClock::new(start(time)?, speed)));
        }
        Err(format!(
            "unknown clock {spec:?}; expected system, manual:TIME or sim:TIME[,speed=N]"
        ))
    }

    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Manual(m) => m.now(),
            Clock::Simulated(s) => s.now(),
        }
    }

    /// Returns once the clock has reached `at` (at once if it already has). May return early;
    /// callers read [`Clock::now`] again.
    pub async fn sleep_until(&self, at: DateTime<Utc>) {
        match self {
            Clock::System => {
                let left = (at - Utc::now()).to_std().unwrap_or_default();
                tokio::time::sleep(left.min(MAX_SLEEP)).await;
            }
            Clock::Manual(m) => m.sleep_until(at).await,
            Clock::Simulated(s) => s.sleep_until(at).await,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Clock::System => "system".to_owned(),
            Clock::Manual(m) => format!("manual (now {})", m.now().to_rfc3339()),
            Clock::Simulated(s) => {
                format!("simulated from {} at {}x", s.origin.to_rfc3339(), s.speed())
            }
        }
    }
}

/// A clock that moves only when told to. Sleepers wake when it reaches their time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
    changed: Arc<watch::Sender<DateTime<Utc>>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> ManualClock {
        ManualClock {
            now: Arc::new(Mutex::new(start)),
            changed: Arc::new(watch::channel(start).0),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        *self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets the time; it never goes backwards (a set to an earlier time is ignored).
    pub fn set(&self, at: DateTime<Utc>) {
        let mut now = self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if at > *now {
            *now = at;
            self.changed.send_replace(at);
        }
    }

    pub fn advance(&self, by: TimeDelta) {
        self.set(self.now() + by);
    }

    async fn sleep_until(&self, at: DateTime<Utc>) {
        let mut rx = self.changed.subscribe();
        while self.now() < at {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

/// A clock that starts at a chosen instant and runs `speed` times faster than real time. Its
/// speed may change while it runs ([`SimulatedClock::set_speed`], for a demo that hurries
/// through quiet months): the time reached so far is kept, and every clone sees the change.
#[derive(Debug, Clone)]
pub struct SimulatedClock {
    origin: DateTime<Utc>,
    state: Arc<Mutex<SimState>>,
    changed: Arc<watch::Sender<()>>,
}

#[derive(Debug, Clone, Copy)]
struct SimState {
    /// The simulated time at `real_start`.
    start: DateTime<Utc>,
    real_start: Instant,
    speed: f64,
}

impl SimulatedClock {
    pub fn new(start: DateTime<Utc>, speed: f64) -> SimulatedClock {
        SimulatedClock {
            origin: start,
            state: Arc::new(Mutex::new(SimState {
                start,
                real_start: Instant::now(),
                speed,
            })),
            changed: Arc::new(watch::channel(()).0),
        }
    }

    fn state(&self) -> SimState {
        *self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn now(&self) -> DateTime<Utc> {
        let s = self.state();
        let elapsed = s.real_start.elapsed().mul_f64(s.speed);
        s.start + TimeDelta::from_std(elapsed).unwrap_or(TimeDelta::MAX)
    }

    pub fn speed(&self) -> f64 {
        self.state().speed
    }

    /// Runs `speed` times faster than real time from now on (a speed that is not a positive
    /// number is ignored); sleepers wake and measure again.
    pub fn set_speed(&self, speed: f64) {
        if !(speed.is_finite() && speed > 0.0) {
            return;
        }
        {
            let mut s = self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let elapsed = s.real_start.elapsed().mul_f64(s.speed);
            s.start += TimeDelta::from_std(elapsed).unwrap_or(TimeDelta::MAX);
            s.real_start = Instant::now();
            s.speed = speed;
        }
        self.changed.send_replace(());
    }

    async fn sleep_until(&self, at: DateTime<Utc>) {
        let mut changed = self.changed.subscribe();
        let left = (at - self.now()).to_std().unwrap_or_default();
        let real = left.div_f64(self.speed());
        tokio::select! {
            () = tokio::time::sleep(real.min(MAX_SLEEP)) => {}
            _ = changed.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_specs_parse() {
        assert!(matches!(Clock::parse("system"), Ok(Clock::System)));
        let Ok(Clock::Simulated(s)) = Clock::parse("sim:2024-03-25T08:00:00+07:00,speed=3600")
        else {
            panic!("a simulated clock");
        };
        assert_eq!(s.speed(), 3600.0);
        assert!(s.now() >= DateTime::parse_from_rfc3339("2024-03-25T01:00:00Z").expect("t"));
        assert!(
            Clock::parse("sim:yesterday")
                .unwrap_err()
                .contains("RFC 3339")
        );
        assert!(
            Clock::parse("sim:2024-03-25T08:00:00+07:00,speed=0")
                .unwrap_err()
                .contains("positive")
        );
        assert!(Clock::parse("wall").unwrap_err().contains("unknown clock"));
    }

    #[tokio::test]
    async fn a_simulated_clock_keeps_its_time_when_its_speed_changes_and_wakes_sleepers() {
        let start = DateTime::parse_from_rfc3339("2024-07-10T08:00:00+07:00")
            .expect("t")
            .with_timezone(&Utc);
        // Slow enough that nothing moves by itself during the test (a year per 10^7 s).
        let clock = SimulatedClock::new(start, 0.000_001);
        let sleeper = {
            let clock = Clock::Simulated(clock.clone());
            tokio::spawn(async move {
                let due = start + TimeDelta::days(30);
                while clock.now() < due {
                    clock.sleep_until(due).await;
                }
                clock.now()
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!sleeper.is_finished(), "a month away at this speed");
        let before = clock.now();
        // A month in about 30 ms: the sleeper wakes well before its 30 s real-time cap.
        clock.set_speed(86_400.0 * 1_000.0);
        assert!(clock.now() >= before, "the time so far is kept");
        assert!(clock.now() < start + TimeDelta::days(1));
        let woke = tokio::time::timeout(Duration::from_secs(10), sleeper)
            .await
            .expect("the sleeper wakes with the new speed")
            .expect("join");
        assert!(woke >= start + TimeDelta::days(30));
        assert_eq!(clock.speed(), 86_400_000.0);
        clock.set_speed(0.0);
        assert_eq!(clock.speed(), 86_400_000.0, "a speed of 0 is ignored");
    }

    #[tokio::test]
    async fn a_manual_clock_wakes_sleepers_when_moved_and_never_goes_back() {
        let start = DateTime::parse_from_rfc3339("2024-04-20T08:00:00+07:00")
            .expect("t")
            .with_timezone(&Utc);
        let clock = ManualClock::new(start);
        let sleeper = {
            let clock = Clock::Manual(clock.clone());
            tokio::spawn(async move { clock.sleep_until(start + TimeDelta::hours(1)).await })
        };
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(TimeDelta::minutes(30));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(TimeDelta::minutes(30));
        sleeper.await.expect("woke");
        clock.set(start);
        assert_eq!(clock.now(), start + TimeDelta::hours(1));
    }
}
