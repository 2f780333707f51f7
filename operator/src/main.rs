#![forbid(unsafe_code)]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    citycloud::cli::main().await
}
