use clap::{Parser, Subcommand};

/// CityCloud operator: isolated hosting for every agency of a city, wired to its shared services.
#[derive(Parser)]
#[command(name = "citycloud-operator", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every controller, with /metrics, /healthz and /readyz.
    Run,
    /// Print every CustomResourceDefinition as YAML.
    Crds,
    /// Print the version.
    Version,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run => anyhow::bail!("not implemented yet"),
        Command::Crds => print!("{}", citycloud::crds::all_yaml()?),
        Command::Version => println!("citycloud-operator {}", env!("CARGO_PKG_VERSION")),
    }
    Ok(())
}
