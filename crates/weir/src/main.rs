//! The `weir` binary: `weir serve` runs the broker. The admin CLI (talking to the HTTP API)
//! joins it as the HTTP API lands.

mod config;
mod serve;

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
    Serve(config::ServeArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Commands::Serve(args) => serve::run(args),
    }
}
