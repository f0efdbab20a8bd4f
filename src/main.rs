use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = herald::cli::Cli::parse();
    if let Err(e) = herald::cli::run(cli).await {
        eprintln!("herald: {e:#}");
        std::process::exit(1);
    }
}
