//! Where a producer should read the before images it no longer keeps in
//! memory: from the side store on disk ([`SideStore`]), or from the
//! compacted state topic, by the offset of the entity's last record.
//!
//!   KAFKA_BOOTSTRAP=127.0.0.1:9092 cargo bench -p skolflode-kafka --bench before_images
//!
//! Writes RECORDS (default 200 000) images of 400 bytes to both, then reads
//! LOOKUPS of them (default 2 000) at random, one at a time as an update
//! needs them, and prints the time per image of each. The topic is the
//! only cost the side store does not have; the side store's cost is its
//! writes, printed too.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use skolflode_kafka::{Admin, KafkaConfig, SideStore, TopicSpec};

type Failure = Box<dyn std::error::Error>;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A deterministic sequence of offsets to look up.
fn lookups(records: u64, count: u64) -> Vec<u64> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..count)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % records
        })
        .collect()
}

fn image(n: u64) -> Vec<u8> {
    let mut out = vec![0u8; 400];
    for (i, b) in out.iter_mut().enumerate() {
        *b = (n.wrapping_mul(31).wrapping_add(i as u64) % 251) as u8;
    }
    out
}

fn side_store(records: u64, wanted: &[u64]) -> Result<(f64, f64), Failure> {
    let dir = std::env::temp_dir().join("skolflode-bench-before-images");
    let store = SideStore::create(&dir, "bench")?;
    let started = Instant::now();
    let batch = 10_000;
    let mut n = 0;
    while n < records {
        let images: Vec<(u64, Vec<u8>)> = (n..(n + batch).min(records))
            .map(|i| (i, image(i)))
            .collect();
        store.apply(images.iter().map(|(i, v)| (*i, v.as_slice())), [])?;
        n += batch;
    }
    let write = started.elapsed().as_secs_f64() / records as f64;
    let started = Instant::now();
    for &slot in wanted {
        let value = store.get(slot)?.ok_or("a slot written is missing")?;
        if value != image(slot) {
            return Err("the side store returned another image".into());
        }
    }
    let read = started.elapsed().as_secs_f64() / wanted.len() as f64;
    Ok((write, read))
}

fn topic(config: &KafkaConfig, records: u64, wanted: &[u64]) -> Result<(f64, f64), Failure> {
    let name = format!(
        "bench-before-images-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let admin = Admin::new(config, Duration::from_secs(30))?;
    runtime.block_on(admin.ensure_topics(&[TopicSpec::new(&name, 1)]))?;
    let mut producer_config = config.build()?;
    producer_config
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("acks", "all");
    let producer: ThreadedProducer<DefaultProducerContext> = producer_config.create()?;
    let started = Instant::now();
    for i in 0..records {
        let key = i.to_be_bytes();
        let value = image(i);
        let mut record = BaseRecord::to(&name).key(&key[..]).payload(&value[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    producer.poll(Duration::from_millis(5));
                    record = back;
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60))?;
    let write = started.elapsed().as_secs_f64() / records as f64;

    let mut consumer_config = config.build()?;
    consumer_config
        .set("group.id", format!("{name}-reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed");
    let consumer: BaseConsumer = consumer_config.create()?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(&name, 0, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    let started = Instant::now();
    for &offset in wanted {
        let mut at = TopicPartitionList::new();
        at.add_partition_offset(&name, 0, Offset::Offset(offset as i64))?;
        consumer.seek_partitions(at, Duration::from_secs(10))?;
        loop {
            let Some(message) = consumer.poll(Duration::from_secs(10)) else {
                return Err(format!("offset {offset} did not arrive").into());
            };
            let message = message?;
            if message.offset() == offset as i64 {
                if message.payload() != Some(image(offset).as_slice()) {
                    return Err("the topic returned another image".into());
                }
                break;
            }
        }
    }
    let read = started.elapsed().as_secs_f64() / wanted.len() as f64;
    drop(consumer);
    runtime.block_on(admin.delete_topics(&[&name]))?;
    Ok((write, read))
}

fn main() -> Result<(), Failure> {
    let records = env_number("RECORDS", 200_000);
    let wanted = lookups(records, env_number("LOOKUPS", 2_000));
    let config = KafkaConfig::from_env();
    let (store_write, store_read) = side_store(records, &wanted)?;
    let (topic_write, topic_read) = topic(&config, records, &wanted)?;
    let micros = |s: f64| s * 1e6;
    println!(
        "{records} images of 400 bytes, {} read at random:",
        wanted.len()
    );
    println!(
        "side store (log, on disk):    write {:8.2} us/image, read {:8.2} us/image",
        micros(store_write),
        micros(store_read)
    );
    println!(
        "state topic, by offset:       write {:8.2} us/image, read {:8.2} us/image",
        micros(topic_write),
        micros(topic_read)
    );
    println!(
        "reading from the topic takes {:.0} times as long as from the side store",
        topic_read / store_read
    );
    Ok(())
}
