use anyhow::Context;
use tasker_shared::database;

#[derive(clap::Args)]
pub struct Args {
    /// Database URL (default: DATABASE_URL, then [database] url from configuration).
    #[arg(long)]
    database_url: Option<String>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut config = super::load_config()?;
    if let Some(url) = args.database_url {
        config.database.url = url;
    }
    let url = &config.database.url;
    let name = database::database_name(url)?;
    if database::create_database_if_missing(url).await? {
        println!("created database {name}");
    }
    let pool = super::connect(&config).await?;
    database::migrate(&pool).await.context("migrating")?;
    println!("database {name} is migrated and PGMQ is installed");
    Ok(())
}
