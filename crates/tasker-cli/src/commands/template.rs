use anyhow::bail;
use clap::Subcommand;
use std::path::PathBuf;
use tasker_shared::models::{RegisterOutcome, TemplateRegistry};
use tasker_shared::template::{load_template_dirs, read_template, template_search_path};

#[derive(Subcommand)]
pub enum Command {
    /// Check template files (or directories of them); prints one line per file.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Register templates into the database (default: every template on TASKER_TEMPLATE_PATH).
    Register { files: Vec<PathBuf> },
}

pub async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Validate { files } => validate(files),
        Command::Register { files } => register(files).await,
    }
}

fn validate(files: Vec<PathBuf>) -> anyhow::Result<()> {
    let mut failures = 0;
    for path in files {
        let results: Vec<_> = if path.is_dir() {
            match load_template_dirs(std::slice::from_ref(&path)) {
                Ok(list) => list.into_iter().map(|(p, t)| Ok((p, t))).collect(),
                Err(e) => vec![Err(e)],
            }
        } else {
            vec![read_template(&path).map(|t| (path.clone(), t))]
        };
        for r in results {
            match r {
                Ok((p, t)) => println!(
                    "ok    {} ({}, {} steps)",
                    p.display(),
                    t.identity(),
                    t.steps.len()
                ),
                Err(e) => {
                    failures += 1;
                    println!("error {e}");
                }
            }
        }
    }
    if failures > 0 {
        bail!("{failures} template(s) invalid");
    }
    Ok(())
}

async fn register(files: Vec<PathBuf>) -> anyhow::Result<()> {
    let paths = if files.is_empty() {
        template_search_path()
    } else {
        files
    };
    let templates = load_template_dirs(&paths)?;
    let config = super::load_config()?;
    let pool = super::connect(&config).await?;
    let registry = TemplateRegistry::new(pool);
    let env = std::env::var("TASKER_ENV").unwrap_or_else(|_| "development".into());
    for (path, template) in templates {
        let template = template.for_environment(&env);
        let outcome = registry.register(&template).await?;
        let word = match outcome {
            RegisterOutcome::Created => "registered",
            RegisterOutcome::Unchanged => "unchanged ",
        };
        println!("{word} {} ({})", template.identity(), path.display());
    }
    Ok(())
}
