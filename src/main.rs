//! The `followd` command line: parses arguments, sets up logging, loads configuration and hands over.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use followd::config::Config;
use followd::telemetry::{self, LogFormat};
use followd::{Application, Role, commands};

/// mimalloc instead of the system allocator: a webhook's path allocates often (parsing, records, replies), and
/// glibc's malloc and free were the largest items in the load profile (about 14% of the service's CPU).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "followd", version, about = "Keeps CRM contact followers right from declarative rules")]
struct Cli {
    /// Configuration file (TOML); default: followd.toml when present. FOLLOWD_* variables override it.
    #[arg(long, global = true, env = "FOLLOWD_CONFIG")]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, env = "FOLLOWD_LOG_FORMAT", value_enum, default_value_t)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the webhook receiver and/or the delivery workers.
    Serve {
        #[arg(long, value_enum, default_value_t)]
        role: Role,
    },
    /// Checks and explains the rules.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Inspects the queue.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Lists, replays and purges dead letters.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Brings a location's existing contacts in line with the rules, or shows what that would change (--plan).
    Reconcile(ReconcileArgs),
    /// The follower changes made to a contact, newest first: when, which operation, the rule and the event.
    Audit {
        contact_id: String,
        /// The contact's sub-account; without it every location is searched.
        #[arg(long)]
        location: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// A location's users in the CRM: id, name, email, whether deleted, and whether they see only the
    /// contacts they own or follow (for whom following matters).
    Users {
        #[arg(long)]
        location: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct ReconcileArgs {
    #[command(subcommand)]
    command: Option<ReconcileCommand>,
    /// The location (sub-account) to read.
    #[arg(long, required = true)]
    location: Option<String>,
    /// Plan this rule set instead of the live one (e.g. an edit under review).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Change nothing: print what a run would change.
    #[arg(long)]
    plan: bool,
    /// Print the plan (or the run's result) as JSON.
    #[arg(long)]
    json: bool,
    /// Whose followers removals may touch in this run (default: managed for remove_all and absent tags).
    #[arg(long, value_enum)]
    ownership: Option<OwnershipArg>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OwnershipArg {
    Any,
    Managed,
}

#[derive(Subcommand)]
enum ReconcileCommand {
    /// Every run: its location, progress and state.
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Lists dead letters, oldest first.
    List {
        /// A JSON array of {id, location_id, contact_id, operations, status, reason, failed_at}.
        #[arg(long)]
        json: bool,
    },
    /// Puts a dead letter's operations (or every one's, with --all) back in its contact's queue, in order.
    Replay(Which),
    /// Deletes a dead letter, or every one with --all.
    Purge(Which),
}

#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct Which {
    /// The dead letter's id, as `dlq list` shows it.
    id: Option<String>,
    /// Every dead letter.
    #[arg(long)]
    all: bool,
}

impl Which {
    fn selection(self) -> followd::queue::Selection {
        match self.id {
            Some(id) if !self.all => followd::queue::Selection::One(id),
            _ => followd::queue::Selection::All,
        }
    }
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Validates the rule set; prints file:line:column: message for each error; exit 1 on any.
    Check {
        /// Rules folder; default: rules_dir from the configuration.
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Also checks every user id a rule can add against the CRM's users in each location it applies to.
        #[arg(long)]
        online: bool,
        /// With --online: the locations rules without `locations` apply to (default: upstream.tokens').
        #[arg(long = "location")]
        locations: Vec<String>,
    },
    /// Shows what a payload would do: the events, the rules that fire and the operations; calls nothing.
    Explain {
        /// The source whose format reads the payload.
        #[arg(long)]
        source: String,
        /// A file holding the payload.
        #[arg(long)]
        event: PathBuf,
        #[arg(long)]
        rules: Option<PathBuf>,
    },
    /// Runs the rule test cases: payload in, follower operations expected out; a diff per failing case; exit 1
    /// on any.
    Test {
        /// Rules folder; default: rules_dir from the configuration.
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Case files or folders; default: the `tests` folder inside the rules folder.
        cases: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum QueueCommand {
    /// Ready contacts, leased contacts, pending operations, dead letters.
    Stats,
    /// Lifts a location's pause (a refused token, a 429) at once, for every process: e.g. after fixing its token.
    Resume {
        /// The location (sub-account) id.
        location: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve { role } => {
            let app = Application::build(config, role).await?;
            app.run_until_stopped(followd::signals::shutdown()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Rules(RulesCommand::Check { rules, online: true, locations }) => {
            commands::rules_check_online(&config, &rules.unwrap_or_else(|| config.rules_dir.clone()), &locations).await
        }
        Command::Rules(RulesCommand::Check { rules, .. }) => {
            Ok(commands::rules_check(&rules.unwrap_or_else(|| config.rules_dir.clone())))
        }
        Command::Rules(RulesCommand::Explain { source, event, rules }) => {
            let dir = rules.unwrap_or_else(|| config.rules_dir.clone());
            commands::rules_explain(&config, &dir, &source, &event).await
        }
        Command::Rules(RulesCommand::Test { rules, cases }) => {
            commands::rules_test(&rules.unwrap_or_else(|| config.rules_dir.clone()), &cases).await
        }
        Command::Queue(QueueCommand::Stats) => commands::queue_stats(&config).await,
        Command::Queue(QueueCommand::Resume { location }) => commands::queue_resume(&config, &location).await,
        Command::Dlq(DlqCommand::List { json }) => commands::dlq_list(&config, json).await,
        Command::Audit { contact_id, location, json } => {
            commands::audit(&config, &contact_id, location.as_deref(), json).await
        }
        Command::Users { location, json } => commands::users(&config, location.as_deref(), json).await,
        Command::Reconcile(ReconcileArgs { command: Some(ReconcileCommand::Status { json }), .. }) => {
            commands::reconcile_status(&config, json).await
        }
        Command::Reconcile(args) => {
            let ownership = args.ownership.map(|o| match o {
                OwnershipArg::Any => followd::domain::followers::Ownership::Any,
                OwnershipArg::Managed => followd::domain::followers::Ownership::Managed,
            });
            let location = args.location.unwrap_or_default();
            let rules = args.rules.unwrap_or_else(|| config.rules_dir.clone());
            commands::reconcile(&config, &location, &rules, args.plan, args.json, ownership).await
        }
        Command::Dlq(DlqCommand::Replay(which)) => commands::dlq_replay(&config, &which.selection()).await,
        Command::Dlq(DlqCommand::Purge(which)) => commands::dlq_purge(&config, &which.selection()).await,
    }
}
