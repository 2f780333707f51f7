#[tokio::main]
async fn main() -> anyhow::Result<()> {
    citycloud::cli::main().await
}
