//! The `weir` binary: `weir serve` runs the broker; every other command is the admin and
//! client CLI, which talks to a broker's HTTP API (never to its files).

mod cli;
mod config;
mod serve;
mod tls;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "weir", version, about = "Weir: a durable, transactional message-queue broker that speaks AMQP 0-9-1")]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run the broker.
    ///
    /// Examples:
    ///   weir serve                                   # ./weir-data, AMQP on 127.0.0.1:5672 and [::1]:5672
    ///   weir serve --data-dir /var/lib/weir --amqp-listen 0.0.0.0:5672
    ///   weir serve --config weir.toml
    #[command(verbatim_doc_comment)]
    Serve(config::ServeArgs),
    /// Create, list, show, purge and delete queues.
    Queue(cli::QueueCommand),
    /// Send one message to a queue.
    ///
    /// Examples:
    ///   weir send orders 'hello'
    ///   echo '{"id": 7}' | weir send orders --content-type application/json --priority 5
    ///   weir send reminders 'later' --delay 60000
    #[command(verbatim_doc_comment)]
    Send(cli::SendArgs),
    /// Take messages from a queue and print their bodies, one per line.
    ///
    /// Examples:
    ///   weir recv orders
    ///   weir recv orders --wait 10 --count 100
    ///   weir recv orders --requeue --json          # look, then put back
    ///   weir recv orders --selector "priority > 5 AND region = 'eu'"
    ///   weir recv replies --correlation-id req-42 --wait 30
    #[command(verbatim_doc_comment)]
    Recv(cli::RecvArgs),
    /// Look at a queue's messages without taking them (a table, or --json).
    ///
    /// Examples:
    ///   weir browse orders
    ///   weir browse orders --state all --count 1000
    ///   weir browse orders --selector "\"x-region\" = 'eu'" --json
    ///   weir browse reminders --state delayed
    #[command(verbatim_doc_comment)]
    Browse(cli::BrowseArgs),
    /// Move ready messages to another queue, or (no TARGET) redrive dead letters back to the
    /// queues they came from.
    ///
    /// Examples:
    ///   weir move orders.dlq orders                 # every ready message
    ///   weir move weir.error                        # redrive to each message's source queue
    ///   weir move orders.dlq orders --count 100 --selector "\"x-first-death-reason\" = 'expired'"
    #[command(verbatim_doc_comment)]
    Move(cli::MoveArgs),
    /// List, create and delete vhosts.
    Vhost(cli::VhostCommand),
    /// Manage users and their permissions (administrators).
    User(cli::UserCommand),
    /// The broker's totals: queues, connections, messages by state, log.
    ///
    /// Example:
    ///   weir status --server http://127.0.0.1:15672
    #[command(verbatim_doc_comment)]
    Status(cli::Connection),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Commands::Serve(args) => serve::run(args),
        Commands::Queue(command) => cli::run(cli::queue(&command)),
        Commands::Send(args) => cli::run(cli::send(&args)),
        Commands::Recv(args) => cli::run(cli::recv(&args)),
        Commands::Browse(args) => cli::run(cli::browse(&args)),
        Commands::Move(args) => cli::run(cli::move_messages(&args)),
        Commands::Vhost(command) => cli::run(cli::vhost(&command)),
        Commands::User(command) => cli::run(cli::user(&command)),
        Commands::Status(connection) => cli::run(cli::status(&connection)),
    }
}
