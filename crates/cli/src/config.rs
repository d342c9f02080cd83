//! The configuration file (`config/giamsat.toml`): every key has a default, unknown keys are
//! refused with the file, line and column, and durations and sizes are human strings.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use giamsat_store::{DEFAULT_DATABASE_URL, StoreOptions};
use serde::{Deserialize, Deserializer};

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_PATH: &str = "config/giamsat.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Config {
    pub store: StoreConfig,
    pub workflows: WorkflowsConfig,
    pub calendar: CalendarConfig,
    pub scheduler: SchedulerConfig,
    pub cron: Vec<CronConfig>,
    pub exporters: Vec<ExporterConfig>,
    pub server: ServerConfig,
    pub log: LogConfig,
}

/// One `[[exporters]]` table: `id`, `type`, `enabled` and the plugin's own keys (checked by the
/// plugin, which names any key it does not know).
#[derive(Debug, Clone, Deserialize)]
pub struct ExporterConfig {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// Attempts of a retryable error before the event is parked.
    #[serde(default = "max_attempts", rename = "max-attempts")]
    pub max_attempts: u32,
    /// The first pause before a retry; it doubles each time (with jitter), up to a minute.
    #[serde(
        default = "initial_backoff",
        rename = "initial-backoff",
        deserialize_with = "duration"
    )]
    pub initial_backoff: Duration,
    #[serde(flatten)]
    pub settings: toml::Table,
}

fn max_attempts() -> u32 {
    8
}

fn initial_backoff() -> Duration {
    Duration::from_millis(500)
}

fn enabled() -> bool {
    true
}

impl Default for Config {
    fn default() -> Self {
        Config {
            store: StoreConfig::default(),
            workflows: WorkflowsConfig::default(),
            calendar: CalendarConfig::default(),
            scheduler: SchedulerConfig::default(),
            cron: vec![
                CronConfig {
                    id: "daily-digest".to_owned(),
                    schedule: "0 7 * * *".to_owned(),
                    time_zone: "Asia/Ho_Chi_Minh".to_owned(),
                    catch_up: Duration::from_secs(6 * 3600),
                    description: "Bản tin hằng ngày cho Văn phòng HĐND".to_owned(),
                },
                CronConfig {
                    id: "monthly-follow-up-review".to_owned(),
                    schedule: "0 8 1 * *".to_owned(),
                    time_zone: "Asia/Ho_Chi_Minh".to_owned(),
                    catch_up: Duration::from_secs(3 * 86_400),
                    description: "Rà soát hằng tháng việc thực hiện kiến nghị".to_owned(),
                },
            ],
            // The documents exporter: every declared document, in every format, under documents/.
            exporters: vec![
                ExporterConfig {
                    id: "documents".to_owned(),
                    kind: "documents".to_owned(),
                    enabled: true,
                    max_attempts: max_attempts(),
                    initial_backoff: initial_backoff(),
                    settings: toml::toml! {
                        output = "documents"
                        formats = ["html", "md", "docx"]
                    },
                },
                // The notifications exporter: without [smtp], messages go to outbox/ as .eml files.
                ExporterConfig {
                    id: "notifications".to_owned(),
                    kind: "notifications".to_owned(),
                    enabled: true,
                    max_attempts: max_attempts(),
                    initial_backoff: initial_backoff(),
                    settings: toml::toml! {
                        from = "Văn phòng HĐND <van-phong@giamsat.invalid>"
                        outbox = "outbox"
                        calendar-dir = "config/calendars"
                        [roles]
                        secretariat = []
                        delegation = []
                    },
                },
            ],
            server: ServerConfig::default(),
            log: LogConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct SchedulerConfig {
    pub concurrency: usize,
    #[serde(deserialize_with = "duration")]
    pub skip_late_after: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            concurrency: 16,
            skip_late_after: Duration::from_secs(300),
        }
    }
}

impl SchedulerConfig {
    pub fn options(&self) -> giamsat_scheduler::SchedulerOptions {
        giamsat_scheduler::SchedulerOptions {
            concurrency: self.concurrency.max(1),
            skip_late_after: chrono::TimeDelta::from_std(self.skip_late_after)
                .unwrap_or(chrono::TimeDelta::MAX),
            ..giamsat_scheduler::SchedulerOptions::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CronConfig {
    pub id: String,
    pub schedule: String,
    #[serde(default = "default_zone")]
    pub time_zone: String,
    #[serde(deserialize_with = "duration")]
    pub catch_up: Duration,
    #[serde(default)]
    pub description: String,
}

fn default_zone() -> String {
    "Asia/Ho_Chi_Minh".to_owned()
}

impl CronConfig {
    pub fn schedule(&self) -> Result<giamsat_scheduler::CronSchedule> {
        let catch_up = chrono::TimeDelta::from_std(self.catch_up).unwrap_or(chrono::TimeDelta::MAX);
        giamsat_scheduler::CronSchedule::new(
            &self.id,
            &self.schedule,
            &self.time_zone,
            catch_up,
            &self.description,
        )
        .map_err(|e| anyhow::anyhow!("configuration [[cron]]: {e}"))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct WorkflowsConfig {
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct CalendarConfig {
    pub dir: PathBuf,
}

impl Default for CalendarConfig {
    fn default() -> Self {
        CalendarConfig {
            dir: PathBuf::from("config/calendars"),
        }
    }
}

impl Default for WorkflowsConfig {
    fn default() -> Self {
        WorkflowsConfig {
            dir: PathBuf::from("workflows"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct StoreConfig {
    pub url: String,
    #[serde(deserialize_with = "size")]
    pub max_event_size: usize,
    pub max_batch: usize,
    pub queue_capacity: usize,
    #[serde(deserialize_with = "duration")]
    pub busy_timeout: Duration,
    pub max_connections: u32,
    #[serde(deserialize_with = "duration")]
    pub poll_interval: Duration,
    pub subscription_batch: usize,
    #[serde(deserialize_with = "size")]
    pub sqlite_cache_size: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        let o = StoreOptions::default();
        StoreConfig {
            url: DEFAULT_DATABASE_URL.to_owned(),
            max_event_size: o.max_event_bytes,
            max_batch: o.max_batch,
            queue_capacity: o.queue_capacity,
            busy_timeout: o.busy_timeout,
            max_connections: o.max_connections,
            poll_interval: o.poll_interval,
            subscription_batch: o.subscription_batch,
            sqlite_cache_size: o.sqlite_cache_bytes,
        }
    }
}

impl StoreConfig {
    pub fn options(&self) -> StoreOptions {
        StoreOptions {
            max_event_bytes: self.max_event_size,
            max_batch: self.max_batch,
            queue_capacity: self.queue_capacity,
            busy_timeout: self.busy_timeout,
            max_connections: self.max_connections,
            poll_interval: self.poll_interval,
            subscription_batch: self.subscription_batch,
            sqlite_cache_bytes: self.sqlite_cache_size,
        }
    }
}

/// `[server]`: the daemon (`giamsat serve`); its flags override these.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ServerConfig {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// Largest accepted request body; larger ones are answered 413.
    #[serde(deserialize_with = "size")]
    pub max_body: usize,
    /// Folder for files uploaded through the web pages (units' reports).
    pub uploads: PathBuf,
    /// How many folded cases the daemon keeps in memory (0: none, every request reads its case).
    pub case_cache: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: giamsat_server::DEFAULT_LISTEN
                .parse()
                .expect("a valid default address"),
            max_body: giamsat_server::DEFAULT_MAX_BODY_BYTES,
            uploads: PathBuf::from("uploads"),
            case_cache: giamsat_cases::DEFAULT_CASE_CACHE,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "warn".to_owned(),
            format: LogFormat::Human,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    Human,
    Json,
}

impl Config {
    /// Reads `explicit` if given (it must exist), else the default file if present, else defaults.
    pub fn load(explicit: Option<&Path>) -> Result<(Config, Option<PathBuf>)> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => {
                let default = PathBuf::from(DEFAULT_CONFIG_PATH);
                if !default.exists() {
                    return Ok((Config::default(), None));
                }
                default
            }
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read configuration file {}", path.display()))?;
        let config = Config::parse(&text, &path.display().to_string())?;
        Ok((config, Some(path)))
    }

    /// Parses configuration text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config> {
        toml::from_str::<Config>(text).map_err(|e| {
            let place = match e.span() {
                Some(span) => {
                    let (line, column) = line_column(text, span.start);
                    format!("{origin}:{line}:{column}")
                }
                None => origin.to_owned(),
            };
            anyhow::anyhow!("invalid configuration at {place}: {}", e.message().trim())
        })
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Parses "250ms", "30s", "5m", "1h", "3d".
pub fn parse_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .with_context(|| format!("duration {text:?} must start with a whole number"))?;
    Ok(match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" | "min" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        "d" => Duration::from_secs(n * 86_400),
        other => bail!("duration {text:?} has unit {other:?}; use ms, s, m, h or d"),
    })
}

/// Parses "512", "64KiB", "1MiB".
pub fn parse_size(text: &str) -> Result<usize> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: usize = number
        .parse()
        .with_context(|| format!("size {text:?} must start with a whole number"))?;
    let factor = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        other => bail!("size {text:?} has unit {other:?}; use B, KiB or MiB"),
    };
    n.checked_mul(factor)
        .with_context(|| format!("size {text:?} is too large"))
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(|e| serde::de::Error::custom(format!("{e:#}")))
}

fn size<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let text = String::deserialize(d)?;
    parse_size(&text).map_err(|e| serde::de::Error::custom(format!("{e:#}")))
}

/// Reads every `*.toml` calendar file in `dir`; a missing folder means weekends only.
pub fn load_calendar(dir: &Path) -> Result<giamsat_engine::Calendar> {
    giamsat_cases::read_calendar_dir(dir).map_err(|e| anyhow::anyhow!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_is_valid_and_equals_the_defaults() {
        let text = include_str!("../../../config/giamsat.toml");
        let parsed = Config::parse(text, "config/giamsat.toml").expect("valid");
        let defaults = Config::default();
        assert_eq!(parsed.store.url, defaults.store.url);
        assert_eq!(
            format!("{:?}", parsed.store),
            format!("{:?}", defaults.store)
        );
        assert_eq!(format!("{:?}", parsed.log), format!("{:?}", defaults.log));
        assert_eq!(
            format!("{:?}", parsed.server),
            format!("{:?}", defaults.server)
        );
        assert_eq!(parsed.workflows.dir, defaults.workflows.dir);
        assert_eq!(parsed.calendar.dir, defaults.calendar.dir);
        assert_eq!(
            format!("{:?}", parsed.scheduler),
            format!("{:?}", defaults.scheduler)
        );
        assert_eq!(parsed.cron, defaults.cron);
        assert_eq!(
            format!("{:?}", parsed.exporters),
            format!("{:?}", defaults.exporters)
        );
        for cron in &parsed.cron {
            cron.schedule().expect("shipped cron schedules are valid");
        }
    }

    #[test]
    fn the_server_section_reads_an_address_a_size_and_a_folder() {
        let config = Config::parse(
            "[server]\nlisten = \"0.0.0.0:9000\"\nmax-body = \"64KiB\"\nuploads = \"/srv/up\"\ncase-cache = 0\n",
            "g.toml",
        )
        .expect("valid");
        assert_eq!(config.server.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(config.server.max_body, 64 * 1024);
        assert_eq!(config.server.uploads, PathBuf::from("/srv/up"));
        assert_eq!(config.server.case_cache, 0);
        let err = Config::parse("[server]\nlisten = \"localhost\"\n", "g.toml").expect_err("bad");
        assert!(err.to_string().contains("g.toml:2:"), "{err}");
        let err = Config::parse("[server]\nlog-format = \"json\"\n", "g.toml").expect_err("bad");
        assert!(err.to_string().contains("log-format"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_place() {
        let err = Config::parse(
            "[store]\nurl = \"sqlite://x.db\"\nmax-batchs = 3\n",
            "g.toml",
        )
        .expect_err("unknown key");
        let msg = err.to_string();
        assert!(
            msg.starts_with("invalid configuration at g.toml:3:1:"),
            "{msg}"
        );
        assert!(msg.contains("max-batchs"), "{msg}");
        let err = Config::parse("[stor]\n", "g.toml").expect_err("unknown table");
        assert!(err.to_string().contains("stor"), "{err}");
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(
            parse_duration("250ms").ok(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_duration("2m").ok(), Some(Duration::from_secs(120)));
        assert!(parse_duration("2 weeks").is_err());
        assert!(parse_duration("fast").is_err());
        assert_eq!(parse_size("1MiB").ok(), Some(1_048_576));
        assert_eq!(parse_size("512").ok(), Some(512));
        assert!(parse_size("1GB").is_err());
        let err = Config::parse("[store]\npoll-interval = \"soon\"\n", "g.toml").expect_err("bad");
        assert!(err.to_string().contains("g.toml:2:"), "{err}");
    }

    #[test]
    fn calendar_files_are_read_with_toml_dates() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(
            dir.path().join("2024.toml"),
            "year = 2024\n[[holidays]]\nname = \"Lễ 30/4 - 1/5\"\nfrom = 2024-04-27\nto = 2024-05-01\n\
             [[make_up_days]]\ndate = 2024-05-04\nreplaces = 2024-04-29\nname = \"Làm bù\"\n",
        )
        .expect("write");
        let calendar = load_calendar(dir.path()).expect("valid");
        let d = |m, day| chrono::NaiveDate::from_ymd_opt(2024, m, day).expect("date");
        assert!(!calendar.is_working_day(d(4, 29)));
        assert!(calendar.is_working_day(d(5, 4)));
        std::fs::write(
            dir.path().join("2025.toml"),
            "year = 2025\n[[holidays]]\nname = 1\n",
        )
        .expect("write");
        let err = load_calendar(dir.path()).expect_err("bad file");
        assert!(err.to_string().contains("2025.toml"), "{err:#}");
        let missing = load_calendar(&dir.path().join("none")).expect("weekends only");
        assert!(!missing.covers(d(1, 1)));
    }

    #[test]
    fn shipped_calendars_load_with_their_swaps() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/calendars");
        let c = load_calendar(&dir).expect("shipped calendars are valid");
        let d = |y, m, day| chrono::NaiveDate::from_ymd_opt(y, m, day).expect("date");
        for year in [2024, 2025, 2026] {
            assert!(c.covers(d(year, 6, 1)), "{year} is covered");
        }
        // DOMAIN.md §4: Monday 29/4/2024 off, Saturday 4/5/2024 worked.
        assert!(!c.is_working_day(d(2024, 4, 29)));
        assert!(c.is_working_day(d(2024, 5, 4)));
        assert!(!c.is_working_day(d(2024, 4, 18)), "Giỗ Tổ 2024");
        // 2025: Friday 2/5 off, Saturday 26/4 worked.
        assert!(!c.is_working_day(d(2025, 5, 2)));
        assert!(c.is_working_day(d(2025, 4, 26)));
        // 2026: Tết from Saturday 14/2 to Sunday 22/2 (DOMAIN.md §4); Saturday 10/1 worked.
        assert!(!c.is_working_day(d(2026, 2, 16)));
        assert!(c.is_working_day(d(2026, 2, 23)));
        assert!(c.is_working_day(d(2026, 1, 10)));
        // 24/11/2026 is recorded but unconfirmed: it stays a working day.
        assert!(c.is_working_day(d(2026, 11, 24)));
    }
}
