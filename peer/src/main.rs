//! sramlink-peer: the Linux end of the sramlink ring (see the library docs for the flow).

use std::process::ExitCode;

use clap::Parser;
use sramlink_peer::app;
use sramlink_peer::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = app::execute(&cli);
    for note in &outcome.notes {
        eprintln!("sramlink-peer: note: {note}");
    }
    if outcome.attached {
        print!("{}", outcome.report.human_summary());
    }
    if cli.json {
        println!("{}", outcome.report.json_line());
    }
    match &outcome.error {
        Some(error) => eprintln!("sramlink-peer: error: {error}"),
        None if !outcome.report.passed() => eprintln!(
            "sramlink-peer: error: the run was not clean: {} lost, {} corrupted, {} protocol \
             errors (guest: {:?})",
            outcome.report.lost,
            outcome.report.corrupted,
            outcome.report.protocol_errors,
            outcome.report.guest
        ),
        None => {}
    }
    ExitCode::from(app::exit_code(&outcome))
}
