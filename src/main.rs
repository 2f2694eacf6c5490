//! `skolflode`: one binary, a subcommand per job.
//!
//! Layout: `main.rs` parses the command line and sets up logging; each
//! subcommand lives in its own module under `cmd/` and returns
//! `anyhow::Result`, so that an error ends the process with a message and a
//! non-zero exit code instead of a panic. Subcommands appear here only when
//! they do real work.

use clap::{Parser, Subcommand};

#[allow(unsafe_code)]
mod allocator;
mod cmd;
mod job;
mod logging;

// Decoding events allocates a string per id; mimalloc makes that markedly
// cheaper than the system allocator (see the codec benchmark). It also
// replaces `malloc` for the C libraries (feature `override`): librdkafka
// allocates and frees every record it is handed, on different threads,
// and with glibc's allocator the producer took four times the page faults
// (about 130 000 against 32 000 a municipality's first read) and 10-15 %
// more time (`scripts/bench-produce`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "skolflode", version, about, long_about = None)]
struct Cli {
    /// Log format: `text` for people, `json` for log pipelines.
    #[arg(
        long,
        global = true,
        env = "SKOLFLODE_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: logging::Format,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check that Kafka and PostgreSQL answer, each within a deadline.
    Check(cmd::check::Args),
    /// The topic contracts: compatibility gate and schema registration.
    Schemas(cmd::schemas::Args),
    /// Run the vendor simulator: SS 12000 API, control API, ground truth.
    Simulate(cmd::simulate::Args),
    /// Read SS 12000 vendors and publish their changes exactly once.
    Produce(cmd::produce::Args),
    /// Turn the change topics into history and weekly register snapshots,
    /// exactly once.
    Process(cmd::process::Args),
    /// Rebuild everything downstream of the change topics from offset zero
    /// under a new application id, into copies of the output topics.
    Replay(cmd::process::ReplayArgs),
    /// Write the weekly and yearly registers (Parquet or PostgreSQL) from
    /// the snapshot topics, exactly once.
    Sink(cmd::sink::Args),
    /// Data-quality feedback: the report of a school organiser and period.
    Quality(cmd::quality::Args),
    /// The whole pipeline on a simulated municipality: simulator, producer,
    /// processor and Parquet sink, checked against the simulator's truth.
    Demo(cmd::demo::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Check(args) => cmd::check::run(args).await,
            Command::Schemas(args) => cmd::schemas::run(args).await,
            Command::Simulate(args) => cmd::simulate::run(args).await,
            Command::Produce(args) => cmd::produce::run(args).await,
            Command::Process(args) => {
                allocator::keep_freed_memory();
                cmd::process::run(args).await
            }
            Command::Replay(args) => {
                allocator::keep_freed_memory();
                cmd::process::replay(args).await
            }
            Command::Sink(args) => {
                allocator::keep_freed_memory();
                cmd::sink::run(args).await
            }
            Command::Quality(args) => cmd::quality::run(args).await,
            Command::Demo(args) => cmd::demo::run(args).await,
        }
    });
    // Blocking tasks still running (a state load, a commit against a
    // broker that is away) must not hold the exit past the job's own
    // grace period.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<cmd::produce::PartialFailure>().is_some() {
                // Some reads failed, others went on.
                std::process::ExitCode::from(2)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}
