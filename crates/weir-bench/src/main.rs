//! The `weir-bench` binary: parse flags, run the command on a tokio runtime, print the
//! report (table or `--json`) on stdout, and exit 0 only if the run did what was asked.
//!
//! Exit codes: 0 success; 1 the run failed, stalled or was cut short (the report is still
//! printed); 2 the flags were refused (clap's convention).

use std::process::ExitCode;

use clap::Parser;
use serde::Serialize;
use weir_bench::config::{Cli, Command};
use weir_bench::error::BenchError;
use weir_bench::{recovery, run};

const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match execute(cli.command) {
        Ok(code) => code,
        Err(BenchError::Config(error)) => {
            eprintln!("weir-bench: {error}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(error) => {
            eprintln!("weir-bench: {error}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn execute(command: Command) -> Result<ExitCode, BenchError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("weir-bench")
        .build()
        .map_err(BenchError::Runtime)?;
    match command {
        Command::Run(args) => {
            let plan = args.plan()?;
            let report = runtime.block_on(run::execute(&plan))?;
            print(args.json, &report, report.render_table())?;
            Ok(exit_code(report.is_success()))
        }
        Command::Fill(args) => {
            let plan = args.plan()?;
            let report = runtime.block_on(run::execute(&plan))?;
            print(args.json, &report, report.render_table())?;
            Ok(exit_code(report.is_success()))
        }
        Command::Recovery(args) => {
            let report = runtime.block_on(recovery::measure(&args))?;
            print(args.json, &report, report.render_table())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print(json: bool, report: &impl Serialize, table: String) -> Result<(), BenchError> {
    if json {
        match serde_json::to_string(report) {
            Ok(text) => println!("{text}"),
            // Reports are plain numbers and strings: a bug if they do not serialise.
            Err(error) => panic!("report does not serialise: {error}"),
        }
    } else {
        print!("{table}");
    }
    Ok(())
}

fn exit_code(success: bool) -> ExitCode {
    if success {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    }
}
