//! Kafka transactions against the real broker: what the rest of skolflode's
//! exactly-once guarantees stand on.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use skolflode_kafka::{classify, TxnErrorClass};
use skolflode_testkit::kafka::Isolation;
use skolflode_testkit::TestKafka;

const TXN_TIMEOUT: Duration = Duration::from_secs(30);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

fn payload_str(p: &Option<Vec<u8>>) -> String {
    String::from_utf8_lossy(p.as_deref().unwrap_or_default()).into_owned()
}

async fn send_all(
    producer: &FutureProducer,
    topic: &str,
    records: impl Iterator<Item = (String, String)>,
) -> anyhow::Result<()> {
    for (key, value) in records {
        producer
            .send(
                FutureRecord::to(topic).key(&key).payload(&value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .with_context(|| format!("sending {key}"))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_transaction_is_invisible_and_committed_is_visible_once() -> anyhow::Result<()> {
    const N: usize = 500;
    let kafka = TestKafka::connect().await?;
    let topic = kafka.topic("txn-visibility", 3).await?;
    let producer: FutureProducer = kafka
        .config()
        .transactional_producer(&kafka.transactional_id("visibility"))?
        .create()?;
    producer.init_transactions(TXN_TIMEOUT)?;

    producer.begin_transaction()?;
    send_all(
        &producer,
        &topic,
        (0..N).map(|i| (format!("k{i}"), format!("aborted-{i}"))),
    )
    .await?;
    producer.flush(TXN_TIMEOUT)?;
    producer.abort_transaction(TXN_TIMEOUT)?;

    producer.begin_transaction()?;
    send_all(
        &producer,
        &topic,
        (0..N).map(|i| (format!("k{i}"), format!("committed-{i}"))),
    )
    .await?;
    producer.commit_transaction(TXN_TIMEOUT)?;

    let committed = kafka
        .drain(&topic, Isolation::ReadCommitted, DRAIN_TIMEOUT)
        .await?;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in &committed {
        *seen.entry(payload_str(&r.payload)).or_default() += 1;
    }
    assert_eq!(
        committed.len(),
        N,
        "read_committed sees exactly the committed records"
    );
    for i in 0..N {
        assert_eq!(
            seen.get(&format!("committed-{i}")),
            Some(&1),
            "committed-{i} exactly once"
        );
    }
    assert!(seen.keys().all(|p| p.starts_with("committed-")));

    // The aborted records were really written: a read_uncommitted reader sees
    // them, so their absence above is the transaction's doing.
    let everything = kafka
        .drain(&topic, Isolation::ReadUncommitted, DRAIN_TIMEOUT)
        .await?;
    assert_eq!(everything.len(), 2 * N);

    kafka.cleanup().await?;
    Ok(())
}

/// Where a transform run is told to die, dropping its clients without
/// committing or aborting, as a crashed process would.
#[derive(Clone, Copy, Debug)]
enum Kill {
    /// After this many output records of the run were sent and flushed to
    /// the broker (so that uncommitted records really sit in the log).
    AfterOutputs(usize),
    /// In this batch of the run, after the offsets were added to the
    /// transaction and before the commit.
    BeforeCommit(usize),
    /// Run until the input is fully processed.
    Never,
}

enum RunEnd {
    Killed,
    Finished,
}

struct Transform<'a> {
    kafka: &'a TestKafka,
    input: &'a str,
    output: &'a str,
    group: &'a str,
    transactional_id: &'a str,
    batch: usize,
}

impl Transform<'_> {
    /// One life of a consume-transform-produce process.
    async fn run(&self, kill: Kill) -> anyhow::Result<RunEnd> {
        let consumer: StreamConsumer = self.kafka.config().consumer(self.group)?.create()?;
        consumer.subscribe(&[self.input])?;
        let producer: FutureProducer = self
            .kafka
            .config()
            .transactional_producer(self.transactional_id)?
            .create()?;
        // Fences any earlier life with the same id and aborts what it left
        // open.
        producer.init_transactions(TXN_TIMEOUT)?;

        let mut produced = 0usize;
        let mut batch_no = 0usize;
        loop {
            let mut batch = Vec::new();
            while batch.len() < self.batch {
                match tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
                    Err(_) => break,
                    Ok(Err(e)) => bail!("consumer error: {e}"),
                    Ok(Ok(m)) => batch.push((
                        m.partition(),
                        m.offset(),
                        m.key().map(<[u8]>::to_vec),
                        m.payload().map(<[u8]>::to_vec),
                    )),
                }
            }
            if batch.is_empty() {
                if self.input_done(&consumer).await? {
                    return Ok(RunEnd::Finished);
                }
                continue;
            }
            batch_no += 1;

            producer.begin_transaction()?;
            let mut next_offsets: BTreeMap<i32, i64> = BTreeMap::new();
            for (partition, offset, key, payload) in &batch {
                let value = format!("out:{}", payload_str(payload));
                let mut record = FutureRecord::to(self.output).payload(&value);
                if let Some(key) = key {
                    record = record.key(key);
                }
                producer
                    .send(record, Duration::from_secs(10))
                    .await
                    .map_err(|(e, _)| e)?;
                produced += 1;
                next_offsets.insert(*partition, offset + 1);
                if let Kill::AfterOutputs(n) = kill {
                    if produced == n {
                        producer.flush(TXN_TIMEOUT)?;
                        return Ok(RunEnd::Killed);
                    }
                }
            }
            let mut offsets = TopicPartitionList::new();
            for (partition, next) in &next_offsets {
                offsets.add_partition_offset(self.input, *partition, Offset::Offset(*next))?;
            }
            let group = consumer
                .group_metadata()
                .context("consumer has no group metadata")?;
            producer.send_offsets_to_transaction(&offsets, &group, TXN_TIMEOUT)?;
            if let Kill::BeforeCommit(n) = kill {
                if batch_no == n {
                    producer.flush(TXN_TIMEOUT)?;
                    return Ok(RunEnd::Killed);
                }
            }
            if let Err(e) = producer.commit_transaction(TXN_TIMEOUT) {
                match classify(&e) {
                    TxnErrorClass::Abort | TxnErrorClass::Retriable => {
                        // The output is dropped and the input re-read from the
                        // committed offsets: a new life does exactly that.
                        producer.abort_transaction(TXN_TIMEOUT)?;
                        return Ok(RunEnd::Killed);
                    }
                    TxnErrorClass::Fatal => bail!("fatal transaction error: {e}"),
                }
            }
        }
    }

    /// All input consumed: the group's committed offsets reached the end of
    /// every input partition.
    async fn input_done(&self, consumer: &StreamConsumer) -> anyhow::Result<bool> {
        let committed = consumer.committed(Duration::from_secs(10))?;
        for element in committed.elements() {
            let (_, high) = consumer.fetch_watermarks(
                self.input,
                element.partition(),
                Duration::from_secs(10),
            )?;
            match element.offset() {
                Offset::Offset(o) if o >= high => {}
                Offset::Invalid if high == 0 => {}
                _ => return Ok(false),
            }
        }
        Ok(!committed.elements().is_empty())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_transform_produce_survives_kills_exactly_once() -> anyhow::Result<()> {
    const N: usize = 600;
    let kafka = TestKafka::connect().await?;
    let input = kafka.topic("ctp-in", 3).await?;
    let output = kafka.topic("ctp-out", 3).await?;
    let group = kafka.group("ctp");
    let transactional_id = kafka.transactional_id("ctp");

    let producer: FutureProducer = kafka.config().producer()?.create()?;
    send_all(
        &producer,
        &input,
        (0..N).map(|i| (format!("k{i}"), format!("{i}"))),
    )
    .await?;
    producer.flush(TXN_TIMEOUT)?;

    let transform = Transform {
        kafka: &kafka,
        input: &input,
        output: &output,
        group: &group,
        transactional_id: &transactional_id,
        batch: 40,
    };
    let lives = [
        Kill::AfterOutputs(95),
        Kill::BeforeCommit(2),
        Kill::AfterOutputs(1),
        Kill::AfterOutputs(170),
        Kill::Never,
    ];
    let mut kills = 0;
    for kill in lives {
        let end = tokio::time::timeout(Duration::from_secs(120), transform.run(kill))
            .await
            .context("a transform life did not end within 120 s")??;
        match (kill, end) {
            (Kill::Never, RunEnd::Finished) => {}
            (Kill::Never, RunEnd::Killed) => bail!("the last life did not finish"),
            (_, RunEnd::Killed) => kills += 1,
            (_, RunEnd::Finished) => bail!("a life finished before its kill point ({kill:?})"),
        }
    }
    assert_eq!(kills, 4);

    let out = kafka
        .drain(&output, Isolation::ReadCommitted, DRAIN_TIMEOUT)
        .await?;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in &out {
        *seen.entry(payload_str(&r.payload)).or_default() += 1;
    }
    let missing: Vec<usize> = (0..N)
        .filter(|i| !seen.contains_key(&format!("out:{i}")))
        .collect();
    let duplicated: Vec<(&String, &usize)> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(missing.is_empty(), "lost inputs: {missing:?}");
    assert!(duplicated.is_empty(), "duplicated outputs: {duplicated:?}");
    assert_eq!(out.len(), N);

    // The kills left aborted output in the log; read_committed hid it.
    let raw = kafka
        .drain(&output, Isolation::ReadUncommitted, DRAIN_TIMEOUT)
        .await?;
    assert!(
        raw.len() > N,
        "expected aborted records from the killed lives, found {} records",
        raw.len()
    );

    kafka.cleanup().await?;
    Ok(())
}
