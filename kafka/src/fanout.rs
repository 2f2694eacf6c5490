//! One read of a set of input partitions, shared by the tasks of an
//! instance. Each record goes to the one task a routing function names
//! (or to none); each task has its own start offsets, so that tasks that
//! committed at different offsets, joined later or rewound after an abort
//! share one consumer without seeing a record twice or missing one.
//!
//! A task learns how far it has read from position markers that follow its
//! records on its channel: everything of that task's below a marker's
//! offsets was delivered before the marker. Those are the offsets the task
//! commits with its outputs ([`crate::Stage::commit_offsets`]).
//!
//! Why not a consumer per task: each task then reads every input
//! partition, and an instance with six tasks reads its input six times.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as ClientError;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::batch::{Batch, Taken};
use crate::eos::StageContext;
use crate::{KafkaConfig, KafkaError};

/// Offsets by topic and partition.
pub type Offsets = BTreeMap<(String, i32), i64>;

/// One input record, copied out of the consumer.
#[derive(Clone, Debug)]
pub struct Record {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
}

/// What a task receives.
#[derive(Clone, Debug)]
pub enum Delivery {
    Record(Record),
    /// The task's position in each of its partitions: the offset after
    /// the last record it was sent or that was skipped for it.
    Positions(Offsets),
}

/// A delivery and the join it belongs to; after a rejoin (a rewind) the
/// task drops deliveries of earlier epochs still on its channel.
#[derive(Clone, Debug)]
pub struct Tagged {
    pub epoch: u64,
    pub delivery: Delivery,
}

enum Command {
    Join {
        task: i32,
        epoch: u64,
        from: Offsets,
        deliveries: SyncSender<Tagged>,
    },
    Leave {
        task: i32,
    },
}

/// Which task a record is for: `None` for none.
pub type Route = Box<dyn FnMut(&str, i32, Option<&[u8]>) -> Option<i32> + Send>;

/// A task's handle on the shared reader.
#[derive(Clone, Debug)]
pub struct FanOutHandle {
    commands: Sender<Command>,
    capacity: usize,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Join { task, epoch, .. } => write!(f, "Join({task}, {epoch})"),
            Command::Leave { task } => write!(f, "Leave({task})"),
        }
    }
}

impl FanOutHandle {
    /// Join (or rejoin, with a higher epoch) as `task`, reading the
    /// partitions of `from` from those offsets.
    pub fn join(
        &self,
        task: i32,
        epoch: u64,
        from: Offsets,
    ) -> Result<Receiver<Tagged>, KafkaError> {
        let (deliveries, receiver) = mpsc::sync_channel(self.capacity);
        self.commands
            .send(Command::Join {
                task,
                epoch,
                from,
                deliveries,
            })
            .map_err(|_| KafkaError::InvalidConfig("the shared reader has stopped".to_owned()))?;
        Ok(receiver)
    }

    /// Stop delivering to `task`.
    pub fn leave(&self, task: i32) {
        let _ = self.commands.send(Command::Leave { task });
    }
}

/// The shared reader's thread.
pub struct FanOut {
    handle: FanOutHandle,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), KafkaError>>>,
}

impl std::fmt::Debug for FanOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanOut").finish_non_exhaustive()
    }
}

impl FanOut {
    /// Start the reader (consumer group `group`, which it never commits
    /// to: the tasks commit their own offsets). `capacity`: records per
    /// task channel.
    pub fn start(
        config: &KafkaConfig,
        group: &str,
        capacity: usize,
        route: Route,
    ) -> Result<Self, KafkaError> {
        let mut client = config.consumer(group)?;
        // End-of-partition events move the position past the transaction
        // markers at a partition's end, which the tasks' barriers wait for.
        client
            .set("enable.partition.eof", "true")
            .set("queued.max.messages.kbytes", "32768");
        let consumer: BaseConsumer<StageContext> = client.create_with_context(StageContext)?;
        let (commands, inbox) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("fanout".to_owned())
            .spawn(move || {
                Reader {
                    client,
                    consumer,
                    route,
                    tasks: BTreeMap::new(),
                    slots: HashMap::new(),
                    names: Vec::new(),
                    assigned: Vec::new(),
                }
                .run(&inbox, &flag)
            })
            .map_err(|e| KafkaError::InvalidConfig(format!("cannot start the reader: {e}")))?;
        Ok(Self {
            handle: FanOutHandle {
                commands,
                capacity: capacity.max(1),
            },
            stop,
            thread: Some(thread),
        })
    }

    pub fn handle(&self) -> FanOutHandle {
        self.handle.clone()
    }

    /// Whether the reader thread has ended (an error).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stop the reader and wait for it.
    pub fn stop(mut self) -> Result<(), KafkaError> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(KafkaError::InvalidConfig(
                "the shared reader panicked".to_owned(),
            )),
            None => Ok(()),
        }
    }
}

impl Drop for FanOut {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Joined {
    epoch: u64,
    deliveries: SyncSender<Tagged>,
    /// By slot: the next offset this task has not been given or skipped,
    /// `None` where it does not read the partition.
    next: Vec<Option<i64>>,
    /// Positions last sent, to send markers only when they moved.
    sent: Offsets,
}

struct Reader {
    client: ClientConfig,
    consumer: BaseConsumer<StageContext>,
    route: Route,
    tasks: BTreeMap<i32, Joined>,
    /// Topic → partition → slot.
    slots: HashMap<String, HashMap<i32, usize>>,
    names: Vec<(Arc<str>, i32)>,
    /// By slot: where the partition was last assigned from (a position
    /// before any record was read), `None` when not assigned.
    assigned: Vec<Option<i64>>,
}

/// Messages taken from the consumer's queue at a time.
const BATCH: usize = 1024;

/// How often idle tasks are told their positions.
const MARK_EVERY: Duration = Duration::from_millis(50);
/// … and how many records may pass between two markers.
const MARK_RECORDS: usize = 2048;

impl Reader {
    fn slot(&mut self, topic: &str, partition: i32) -> usize {
        if let Some(s) = self.slots.get(topic).and_then(|p| p.get(&partition)) {
            return *s;
        }
        let slot = self.names.len();
        self.names.push((Arc::from(topic), partition));
        self.assigned.push(None);
        for joined in self.tasks.values_mut() {
            joined.next.push(None);
        }
        self.slots
            .entry(topic.to_owned())
            .or_default()
            .insert(partition, slot);
        slot
    }

    fn run(mut self, inbox: &Receiver<Command>, stop: &AtomicBool) -> Result<(), KafkaError> {
        let mut last_mark = Instant::now();
        let mut since_mark = 0usize;
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let mut changed = false;
            loop {
                match inbox.try_recv() {
                    Ok(command) => {
                        self.command(command);
                        changed = true;
                    }
                    Err(TryRecvError::Empty) => break,
                    // Every handle is gone: nobody to read for.
                    Err(TryRecvError::Disconnected) => return Ok(()),
                }
            }
            if changed {
                self.reassign()?;
                self.mark(true)?;
            }
            if self.tasks.is_empty() {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            // A batch per turn: the consumer is replaced on reassignment,
            // and its queue with it.
            let mut batch = Batch::new(&self.consumer, BATCH)?;
            batch.take(Duration::from_millis(20));
            for taken in batch.messages() {
                let (topic, partition, offset, key, payload) = match taken {
                    Taken::Message {
                        topic,
                        partition,
                        offset,
                        key,
                        payload,
                    } => (topic, partition, offset, key, payload),
                    Taken::End { .. } => continue,
                    Taken::Error { error, .. } => {
                        return Err(KafkaError::Client(ClientError::MessageConsumption(error)))
                    }
                };
                // Every assigned partition has its slot (made on join).
                let Some(slot) = self
                    .slots
                    .get(topic)
                    .and_then(|p| p.get(&partition))
                    .copied()
                else {
                    continue;
                };
                let target = (self.route)(topic, partition, key);
                let mut record = None;
                let mut gone = Vec::new();
                for (task, joined) in &mut self.tasks {
                    let Some(Some(next)) = joined.next.get_mut(slot) else {
                        continue;
                    };
                    if offset < *next {
                        continue;
                    }
                    *next = offset + 1;
                    if target != Some(*task) {
                        continue;
                    }
                    let (topic, partition) = &self.names[slot];
                    let r = record.get_or_insert_with(|| Record {
                        topic: Arc::clone(topic),
                        partition: *partition,
                        offset,
                        key: key.map(<[u8]>::to_vec),
                        payload: payload.map(<[u8]>::to_vec),
                    });
                    let tagged = Tagged {
                        epoch: joined.epoch,
                        delivery: Delivery::Record(r.clone()),
                    };
                    if joined.deliveries.send(tagged).is_err() {
                        gone.push(*task);
                    }
                }
                for task in gone {
                    self.tasks.remove(&task);
                }
                since_mark += 1;
            }
            drop(batch);
            if since_mark >= MARK_RECORDS || last_mark.elapsed() >= MARK_EVERY {
                self.mark(false)?;
                since_mark = 0;
                last_mark = Instant::now();
            }
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Join {
                task,
                epoch,
                from,
                deliveries,
            } => {
                let mut next = vec![None; self.names.len()];
                for ((topic, partition), offset) in &from {
                    let slot = self.slot(topic, *partition);
                    if next.len() <= slot {
                        next.resize(slot + 1, None);
                    }
                    next[slot] = Some(*offset);
                }
                self.tasks.insert(
                    task,
                    Joined {
                        epoch,
                        deliveries,
                        next,
                        sent: Offsets::new(),
                    },
                );
            }
            Command::Leave { task } => {
                self.tasks.remove(&task);
            }
        }
    }

    /// Assign every partition some task reads, from the earliest offset a
    /// task still needs, to a new consumer: an old one's positions could
    /// outlive the assignment and tell a rewound task it has read records
    /// it was never given.
    fn reassign(&mut self) -> Result<(), KafkaError> {
        self.consumer = self.client.create_with_context(StageContext)?;
        let mut from: Vec<Option<i64>> = vec![None; self.names.len()];
        for joined in self.tasks.values() {
            for (slot, next) in joined.next.iter().enumerate() {
                if let (Some(n), Some(f)) = (next, from.get_mut(slot)) {
                    *f = Some(f.map_or(*n, |g: i64| g.min(*n)));
                }
            }
        }
        let mut list = TopicPartitionList::new();
        for (slot, offset) in from.iter().enumerate() {
            if let (Some(o), Some((topic, partition))) = (offset, self.names.get(slot)) {
                list.add_partition_offset(topic, *partition, Offset::Offset(*o))?;
            }
        }
        self.consumer.assign(&list)?;
        self.assigned = from;
        Ok(())
    }

    /// Tell each task its positions (when they moved, unless `always`).
    fn mark(&mut self, always: bool) -> Result<(), KafkaError> {
        let mut read: Vec<Option<i64>> = self.assigned.clone();
        for e in self.consumer.position()?.elements() {
            if let (Offset::Offset(o), Some(slot)) = (
                e.offset(),
                self.slots
                    .get(e.topic())
                    .and_then(|p| p.get(&e.partition())),
            ) {
                if let Some(r) = read.get_mut(*slot) {
                    *r = Some(r.map_or(o, |a| a.max(o)));
                }
            }
        }
        let mut gone = Vec::new();
        for (task, joined) in &mut self.tasks {
            let mut positions = Offsets::new();
            for (slot, next) in joined.next.iter().enumerate() {
                let Some(next) = next else { continue };
                let at = read
                    .get(slot)
                    .copied()
                    .flatten()
                    .map_or(*next, |r| r.max(*next));
                let (topic, partition) = &self.names[slot];
                positions.insert((topic.to_string(), *partition), at);
            }
            if !always && positions == joined.sent {
                continue;
            }
            joined.sent.clone_from(&positions);
            let tagged = Tagged {
                epoch: joined.epoch,
                delivery: Delivery::Positions(positions),
            };
            if joined.deliveries.send(tagged).is_err() {
                gone.push(*task);
            }
        }
        for task in gone {
            self.tasks.remove(&task);
        }
        Ok(())
    }
}
