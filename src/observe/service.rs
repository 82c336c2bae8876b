//! systemd's notify protocol (`Type=notify`): READY once the worker can work, a one-line
//! STATUS for `systemctl status`, STOPPING and EXTEND_TIMEOUT while it drains.
//!
//! Invariant: outside systemd (no `NOTIFY_SOCKET`) every call is a no-op, and a failure to
//! notify is never a failure of the worker: it is logged at debug level and ignored.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        log::debug!("systemd notify failed: {e}");
    }
}

/// Start-up is complete: Redis answered, the migrations are applied and every group exists.
pub(crate) fn ready() {
    send(&[NotifyState::Ready]);
}

/// The line `systemctl status` shows.
pub(crate) fn status(line: &str) {
    send(&[NotifyState::Status(line)]);
}

/// The watchdog is fed: every watched thread has beaten recently.
pub(crate) fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// The watchdog interval systemd asks for (`WatchdogSec=`), if any.
pub(crate) fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

/// A stop was requested; draining may take up to `drain` more.
pub(crate) fn stopping(drain: Duration) {
    let usec = u32::try_from(drain.as_micros()).unwrap_or(u32::MAX);
    send(&[NotifyState::Stopping, NotifyState::Status("stopping: finishing batches already read")]);
    send(&[NotifyState::ExtendTimeoutUsec(usec)]);
}
