//! Reading the records of one subject from topics, each from its beginning
//! to its end as it stands, read committed.

use std::time::Duration;

use rdkafka::message::Message;
use skolflode_kafka::KafkaConfig;
use skolflode_schemas::catalogue;

use crate::QualityError;

/// Every record of `subject` on `topics`, handed to `keep` in the order
/// read; records of another subject are left out and counted in a
/// warning that calls them `what`. Blocking.
pub fn read_all<T: skolflode_schemas::AvroType>(
    kafka: &KafkaConfig,
    topics: &[String],
    subject: &str,
    what: &str,
    mut keep: impl FnMut(T),
) -> Result<(), QualityError> {
    let decoder = catalogue::decoder::<T>(subject)?;
    for topic in topics {
        let client = kafka.consumer(crate::organisations::GROUP)?;
        let mut undecodable = 0u64;
        skolflode_kafka::read_to_end::<QualityError>(
            client,
            topic,
            Duration::from_secs(120),
            |m| {
                match m.payload().map(|p| decoder.decode(p)) {
                    Some(Ok(record)) => keep(record),
                    _ => undecodable += 1,
                }
                Ok(())
            },
        )?;
        if undecodable > 0 {
            tracing::warn!(
                topic,
                undecodable,
                "records on a {what} topic that are not {what} were left out"
            );
        }
    }
    Ok(())
}
