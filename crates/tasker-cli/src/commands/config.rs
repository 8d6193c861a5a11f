use clap::Subcommand;

#[derive(Subcommand)]
pub enum Command {
    /// Print the merged configuration (base, environment, environment variables) as TOML.
    Show,
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Show => {
            let mut config = super::load_config()?;
            config.database.url = tasker_shared::database::redact(&config.database.url);
            if !config.orchestration.api_key.is_empty() {
                config.orchestration.api_key = "***".into();
            }
            if !config.orchestration.session_secret.is_empty() {
                config.orchestration.session_secret = "***".into();
            }
            let env = std::env::var("TASKER_ENV").unwrap_or_else(|_| "development".into());
            println!("# environment: {env}");
            print!("{}", toml::to_string_pretty(&config)?);
            Ok(())
        }
    }
}
