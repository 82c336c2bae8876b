//! The one answer to "whose fault is this Postgres error?", which decides what a worker does
//! next: back off, retry at once, dead-letter the row, or wait for an operator.

/// What a Postgres error means for the batch that met it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The server is unreachable or not serving: the connection is gone (no SQLSTATE), or
    /// class 08 (connection), 53 (resources), 57 (operator intervention, e.g. a shutdown), or
    /// 25006 (a read-only standby, after a failover).
    /// Back off and retry; not the event's fault.
    Unreachable,
    /// Class 40 (a deadlock or serialization failure with a concurrent transaction) or 55P03
    /// (a lock timeout). Nobody's fault: retry the batch shortly.
    Conflict,
    /// Class 22 (data exception), 23 (integrity constraint), 54 (program limit, such as an
    /// oversized index row): this row can never be written. Isolate it and dead-letter it.
    RejectedRow,
    /// Anything else (class 42 permission or undefined column, ...): the schema or the
    /// permissions need attention; the events are not at fault.
    StatementRefused,
}

impl Fault {
    /// The infrastructure's fault rather than the statement's: a handler meeting one has not
    /// failed on its event, and the whole batch is retried.
    pub fn is_infrastructure(self) -> bool {
        matches!(self, Fault::Unreachable | Fault::Conflict)
    }
}

/// Classifies `e` by its SQLSTATE class.
pub fn classify(e: &postgres::Error) -> Fault {
    let Some(code) = e.code() else {
        return Fault::Unreachable;
    };
    match code.code() {
        // A standby after a failover (read-only transaction): a new connection may reach the
        // new primary.
        "25006" => return Fault::Unreachable,
        // lock_timeout: the lock may be free on the next try.
        "55P03" => return Fault::Conflict,
        _ => {}
    }
    match code.code().get(..2) {
        Some("08" | "53" | "57") => Fault::Unreachable,
        Some("40") => Fault::Conflict,
        Some("22" | "23" | "54") => Fault::RejectedRow,
        _ => Fault::StatementRefused,
    }
}

/// A Postgres error as one line: the server's message, its detail, and its SQLSTATE, or the
/// client's error.
pub fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{}: {detail} (SQLSTATE {})", db.message(), db.code().code()),
            None => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        },
        None => e.to_string(),
    }
}
