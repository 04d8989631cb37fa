//! One replica of a web app, as its own OS process: see `tokenkit_tests::replica`.

#[tokio::main]
async fn main() {
    tokenkit_tests::replica::run_from_env().await;
}
