//! `giamsat scheduler run` and `giamsat exporters run` beside a running daemon on the same store:
//! the daemon holds the leases of the scheduler and of each exporter, so the command waits for
//! the scheduler (and takes it over when the daemon stops) and leaves the exporters to it, rather
//! than firing timers or sending e-mails a second time.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use crate::support::{Daemon, PATIENCE, Sandbox, workflows_dir};

#[test]
fn the_scheduler_and_exporters_commands_leave_the_daemons_tasks_to_it() {
    let s = Sandbox::sqlite();
    let clock = ["--clock", "manual:2024-03-25T08:00:00+07:00"];
    let mut daemon = Daemon::start(&s, &[], &clock);
    let w = workflows_dir();

    // Once: every exporter the daemon runs is skipped, by name.
    let once = s.ok(&["--workflows", &w, "exporters", "run", "--once"]);
    let lines = once.lines();
    assert!(!lines.is_empty(), "{}", once.stderr);
    for line in &lines {
        assert!(
            line.contains("\tskipped: another process (a daemon?) runs it now (lease exporter/"),
            "{line}"
        );
    }

    // The scheduler waits for the daemon's lease, and runs once the daemon has stopped.
    let mut child = s
        .command(&["--workflows", &w, "--clock", clock[1], "scheduler", "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start giamsat scheduler run");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wait_for = |fragment: &str| {
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(PATIENCE) {
                Ok(line) if line.contains(fragment) => return,
                Ok(line) => seen.push(line),
                Err(_) => panic!("no {fragment:?} from scheduler run; it said: {seen:?}"),
            }
        }
    };
    wait_for("waiting: another process (a daemon or `giamsat scheduler run`) runs the scheduler");
    daemon.stop();
    wait_for("scheduler running on the manual");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().expect("wait");
    assert!(status.success(), "scheduler run exited with {status}");
}
