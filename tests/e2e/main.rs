//! End-to-end tests: the real `giamsat` binary, run as a user runs it, against real SQLite files
//! and (when `GIAMSAT_TEST_POSTGRES_URL` is set) a real PostgreSQL.

mod archive_cli;
mod browser;
mod cases_cli;
mod daemon_http;
mod demo_cli;
mod documents_cli;
mod events_cli;
mod exec_cli;
mod exporters_cli;
mod leases_cli;
mod notifications_cli;
mod remote_cli;
mod scheduler_cli;
mod seed_to_the_end;
mod support;
