//! The real `citycloud-operator` binary, built inside the test crate so integration tests can
//! run it as a process (`CARGO_BIN_EXE_operator-under-test`).
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    citycloud::cli::main().await
}
