//! Taking the messages waiting in a consumer's queue many at a time.
//!
//! `BaseConsumer::poll` hands out one message per call, and each call
//! pays for a queue lock, two clock reads and an event allocation: a sink
//! reading tens of millions of small records spends more on polling than
//! on decoding them. [`Batch`] takes up to its capacity in one call
//! (`rd_kafka_consume_batch_queue`, librdkafka's batch API) and lends
//! them out until the next take.
//!
//! Only for consumers that are assigned their partitions (no subscription,
//! so no rebalance to serve) and that commit without asking for the
//! result, or not at all: the batch call returns messages and serves
//! librdkafka's own callbacks, but has no place for the events of
//! rust-rdkafka's poll.

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};

use crate::KafkaError;

/// What the queue held.
#[derive(Debug)]
pub enum Taken<'a> {
    /// A record.
    Message {
        /// Its topic's name (empty if librdkafka's is not UTF-8).
        topic: &'a str,
        partition: i32,
        offset: i64,
        key: Option<&'a [u8]>,
        payload: Option<&'a [u8]>,
    },
    /// The partition's end was reached (`enable.partition.eof`).
    End { partition: i32 },
    /// An error the consumer reported for a partition (-1: none).
    Error {
        partition: i32,
        error: RDKafkaErrorCode,
    },
}

/// A consumer's queue and the messages last taken from it.
pub struct Batch<'c> {
    queue: NonNull<rdsys::rd_kafka_queue_t>,
    taken: Vec<*mut rdsys::rd_kafka_message_t>,
    capacity: usize,
    /// The messages live in the consumer's memory: it must outlive them.
    _consumer: PhantomData<&'c ()>,
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("taken", &self.taken.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl<'c> Batch<'c> {
    /// Take from `consumer`'s queue, at most `capacity` (≥ 1) at a time.
    pub fn new<C: ConsumerContext>(
        consumer: &'c BaseConsumer<C>,
        capacity: usize,
    ) -> Result<Batch<'c>, KafkaError> {
        // SAFETY: the client pointer is valid while `consumer` is, which
        // `'c` guarantees; the queue reference taken here is released in
        // `drop`.
        let queue = unsafe { rdsys::rd_kafka_queue_get_consumer(consumer.client().native_ptr()) };
        let queue = NonNull::new(queue).ok_or_else(|| {
            KafkaError::Client(rdkafka::error::KafkaError::ClientCreation(
                "the consumer has no queue of its own (no group.id)".into(),
            ))
        })?;
        let capacity = capacity.max(1);
        Ok(Batch {
            queue,
            taken: Vec::with_capacity(capacity),
            capacity,
            _consumer: PhantomData,
        })
    }

    /// Release the messages taken before, then take those waiting, waiting
    /// up to `timeout` for the first. Returns how many were taken.
    pub fn take(&mut self, timeout: Duration) -> usize {
        self.release();
        let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: the array has room for `capacity` pointers; librdkafka
        // writes at most that many and returns how many, or -1.
        let n = unsafe {
            rdsys::rd_kafka_consume_batch_queue(
                self.queue.as_ptr(),
                timeout_ms,
                self.taken.as_mut_ptr(),
                self.capacity,
            )
        };
        let n = usize::try_from(n).unwrap_or(0).min(self.capacity);
        // SAFETY: the first `n` slots were written with valid messages.
        unsafe { self.taken.set_len(n) };
        n
    }

    /// The messages of the last take, in queue order.
    pub fn messages(&self) -> impl Iterator<Item = Taken<'_>> + '_ {
        // A topic's name is looked up once per run of its messages, not
        // once per message: a sink's consumer reads one topic.
        let mut last_topic: (*mut rdsys::rd_kafka_topic_t, &str) = (std::ptr::null_mut(), "");
        self.taken.iter().map(move |&message| {
            // SAFETY: every pointer in `taken` is a message librdkafka
            // returned and that is not destroyed before the next take.
            let m = unsafe { &*message };
            let partition = m.partition;
            if m.err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__PARTITION_EOF {
                Taken::End { partition }
            } else if m.err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
                Taken::Error {
                    partition,
                    error: m.err.into(),
                }
            } else {
                let payload = if m.payload.is_null() {
                    None
                } else {
                    // SAFETY: librdkafka guarantees `len` bytes at
                    // `payload`, alive as long as the message.
                    Some(unsafe { std::slice::from_raw_parts(m.payload as *const u8, m.len) })
                };
                let key = if m.key.is_null() {
                    None
                } else {
                    // SAFETY: as for the payload, `key_len` bytes.
                    Some(unsafe { std::slice::from_raw_parts(m.key as *const u8, m.key_len) })
                };
                if m.rkt != last_topic.0 {
                    let name = if m.rkt.is_null() {
                        ""
                    } else {
                        // SAFETY: a message's topic handle outlives it
                        // (the batch holds the message until the next
                        // take), and its name is a NUL-terminated string
                        // it owns.
                        unsafe { std::ffi::CStr::from_ptr(rdsys::rd_kafka_topic_name(m.rkt)) }
                            .to_str()
                            .unwrap_or_default()
                    };
                    last_topic = (m.rkt, name);
                }
                let topic = last_topic.1;
                Taken::Message {
                    topic,
                    partition,
                    offset: m.offset,
                    key,
                    payload,
                }
            }
        })
    }

    fn release(&mut self) {
        for message in self.taken.drain(..) {
            // SAFETY: each message is destroyed once, here.
            unsafe { rdsys::rd_kafka_message_destroy(message) };
        }
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.release();
        // SAFETY: the reference taken in `new`, released once.
        unsafe { rdsys::rd_kafka_queue_destroy(self.queue.as_ptr()) };
    }
}
