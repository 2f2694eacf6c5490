//! What to do when a transactional call fails.
//!
//! librdkafka marks each transactional error as retriable (call the same
//! function again), abortable (abort the transaction, rewind the input to the
//! last committed offsets and redo the work) or fatal (the producer is
//! fenced or broken: drop it, build a new one, which fences in turn).
//! Everything that is neither retriable nor abortable is treated as fatal,
//! because guessing otherwise risks duplicates.

use rdkafka::error::KafkaError as ClientError;

/// The three ways to handle a failed transactional call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnErrorClass {
    /// Call the same operation again.
    Retriable,
    /// Abort the current transaction and redo its work from the last
    /// committed input position.
    Abort,
    /// Drop the producer; start over with a new one.
    Fatal,
}

/// Classify an error returned by `init_transactions`, `begin_transaction`,
/// `send_offsets_to_transaction`, `commit_transaction` or
/// `abort_transaction`.
pub fn classify(error: &ClientError) -> TxnErrorClass {
    match error {
        ClientError::Transaction(e) => {
            if e.is_fatal() {
                TxnErrorClass::Fatal
            } else if e.txn_requires_abort() {
                TxnErrorClass::Abort
            } else if e.is_retriable() {
                TxnErrorClass::Retriable
            } else {
                TxnErrorClass::Fatal
            }
        }
        // A send that failed inside a transaction poisons it: the records
        // that did get through must not be committed without the others.
        ClientError::MessageProduction(_) => TxnErrorClass::Abort,
        _ => TxnErrorClass::Fatal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaErrorCode;

    #[test]
    fn failed_send_aborts() {
        let err = ClientError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert_eq!(classify(&err), TxnErrorClass::Abort);
    }

    #[test]
    fn unknown_errors_are_fatal() {
        let err = ClientError::Canceled;
        assert_eq!(classify(&err), TxnErrorClass::Fatal);
    }
}
