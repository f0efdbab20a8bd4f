use clap::Parser;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() {
    let cli = herald::cli::Cli::parse();
    if let Err(e) = herald::cli::run(cli).await {
        eprintln!("herald: {e:#}");
        std::process::exit(1);
    }
}
