//! The command line, as clap definitions. Raw values only: `serve` turns
//! them into validated configuration.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::units::{ByteSize, Seconds};

/// Comet: a server-push hub. Publish to channels over HTTP; subscribers
/// receive every message, once, in order, over SSE, HTTP streaming, long
/// polling or short polling.
#[derive(Debug, Parser)]
#[command(name = "comet", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a Comet server.
    Serve(Box<ServeArgs>),
    /// Publish a message to a channel.
    Pub(PubArgs),
    /// Print the messages of channels (or of any SSE URL) as they arrive.
    Sub(SubArgs),
    /// Mint a JWT for this server's clients (with the secret or private key
    /// the server verifies with), and print it.
    Token(TokenArgs),
    /// Parse a text/event-stream from standard input, as a browser would,
    /// and print each event as a JSON line.
    Parse(ParseArgs),
    /// Load a running push server over HTTP and print figures.
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// Options of `comet pub`.
#[derive(Debug, Args)]
pub struct PubArgs {
    /// The channel.
    #[arg(required_unless_present = "batch", conflicts_with = "batch")]
    pub channel: Option<String>,
    /// The message data; `-` or nothing reads it from standard input.
    #[arg(conflicts_with = "batch")]
    pub data: Option<String>,
    /// The event type (default: message).
    #[arg(long, conflicts_with = "batch")]
    pub event: Option<String>,
    /// The publish's idempotency key: a repeat within the server's
    /// idempotency window is answered with the original (`"duplicate":
    /// true`) and stores nothing. Default: a key of its own, so that its
    /// retries never store it twice.
    #[arg(long, conflicts_with = "batch")]
    pub idempotency_key: Option<String>,
    /// Publish the NDJSON lines of FILE (`-`: standard input), each
    /// `{"channel", "data", "event"?, "idempotency_key"?}` (`data` a string,
    /// or any JSON value, stored as its compact JSON text), in batches of
    /// --batch-size: each batch is stored whole or not at all. Prints one
    /// answer line per message.
    #[arg(long, value_name = "FILE")]
    pub batch: Option<String>,
    /// Messages per batch request with --batch (at most the server's
    /// --max-batch-messages).
    #[arg(long, default_value_t = 1000, requires = "batch")]
    pub batch_size: usize,
    /// Times a publish whose outcome could not be learned (a timeout, a
    /// dropped connection, a 503) is sent again, with the same idempotency
    /// key; 0 sends no key of its own.
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
    /// The Comet server.
    #[arg(long, env = "COMET_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// The token to publish with (an API key or a JWT).
    #[arg(long, env = "COMET_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Options of `comet token`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("key").required(true).args(["jwt_secret_file", "jwt_private_key_file"])))]
pub struct TokenArgs {
    /// Sign with this HS256 secret (the server's --jwt-secret-file).
    #[arg(long, env = "COMET_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// Sign with this PEM private key (RSA, EC P-256 or Ed25519; the server
    /// verifies with its public key, --jwt-public-key-file).
    #[arg(long)]
    pub jwt_private_key_file: Option<PathBuf>,
    /// Channels it may subscribe to (comma-separated patterns: a name, a
    /// prefix ending in `*`, or `*`).
    #[arg(long)]
    pub subscribe: Option<String>,
    /// Channels it may publish to (patterns, as --subscribe).
    #[arg(long)]
    pub publish: Option<String>,
    /// How long it is valid (e.g. 90s, 10m, 24h).
    #[arg(long, default_value = "1h")]
    pub ttl: Seconds,
    /// Its subject (`sub`): who it is for.
    #[arg(long)]
    pub subject: Option<String>,
    /// Its issuer (`iss`), when the server checks one.
    #[arg(long, env = "COMET_JWT_ISSUER")]
    pub issuer: Option<String>,
    /// Its audience (`aud`), when the server checks one.
    #[arg(long, env = "COMET_JWT_AUDIENCE")]
    pub audience: Option<String>,
}

/// How `comet sub` reaches the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SubTransport {
    /// Server-Sent Events.
    Sse,
    /// HTTP streaming (NDJSON).
    Stream,
    /// Long polling (each poll held up to 30 s).
    Poll,
    /// Short polling (one poll per second while idle).
    Shortpoll,
    /// WebSocket.
    Ws,
}

/// How `comet sub` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people: `channel: data`.
    Text,
    /// One JSON object per line.
    Json,
}

/// Options of `comet sub`.
#[derive(Debug, Args)]
pub struct SubArgs {
    /// Channels (`news` or `news,sport`), or the URL of any SSE endpoint.
    pub target: String,
    /// Resume after this id.
    #[arg(long)]
    pub since: Option<String>,
    /// Start with the newest N messages of each channel.
    #[arg(long, conflicts_with = "since")]
    pub backlog: Option<usize>,
    /// The transport (channels only; a URL is read as SSE).
    #[arg(long, value_enum, default_value_t = SubTransport::Sse)]
    pub transport: SubTransport,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Exit after this many messages.
    #[arg(long)]
    pub count: Option<u64>,
    /// The Comet server (for channels).
    #[arg(long, env = "COMET_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// The token to subscribe with (an API key or a JWT).
    #[arg(long, env = "COMET_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Options of `comet parse`.
#[derive(Debug, Args)]
pub struct ParseArgs {
    /// Parse as a client that reconnected with this Last-Event-ID would.
    #[arg(long)]
    pub last_event_id: Option<String>,
    /// Longest line accepted.
    #[arg(long, default_value = "1MiB")]
    pub max_line: ByteSize,
    /// Largest event accepted.
    #[arg(long, default_value = "16MiB")]
    pub max_event: ByteSize,
}

/// Load scenarios. Each is bounded in time, runs on loopback, and prints one
/// line of figures (`key=value`); none judges them.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// N SSE connections held open: time to open, server memory per connection.
    Idle(BenchIdleArgs),
    /// N subscribers on one channel: deliveries/s, latency, completeness.
    Fanout(BenchDeliveryArgs),
    /// N subscribers each on their own channel.
    Channels(BenchDeliveryArgs),
    /// N long-polling clients while messages are published at a rate.
    Longpoll(BenchLongPollArgs),
    /// Concurrent publishers publishing as fast as acknowledgements allow.
    Publish(BenchPublishArgs),
}

/// The server a scenario loads.
#[derive(Debug, Args)]
pub struct BenchTarget {
    /// The server, e.g. http://127.0.0.1:8080 (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// What kind of server it is.
    #[arg(long, value_enum, default_value_t = TargetKind::Comet)]
    pub target: TargetKind,
}

/// Server kinds `comet bench` can load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetKind {
    /// Comet.
    Comet,
    /// Nchan (nginx), configured as bench/compare.sh does.
    Nchan,
}

/// Options of `comet bench idle`.
#[derive(Debug, Args)]
pub struct BenchIdleArgs {
    #[command(flatten)]
    pub target: BenchTarget,
    /// Connections.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Channels they spread over.
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// The server's process id (for nginx: the worker's), to read its memory.
    #[arg(long)]
    pub server_pid: u32,
    /// Connections opened at once.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// How the connections subscribe.
    #[arg(long, value_enum, default_value_t = BenchTransport::Sse)]
    pub transport: BenchTransport,
}

/// How `comet bench` subscribers connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchTransport {
    /// Server-Sent Events.
    Sse,
    /// WebSocket.
    Ws,
}

impl From<BenchTransport> for comet_bench::subscriber::Transport {
    fn from(transport: BenchTransport) -> Self {
        match transport {
            BenchTransport::Sse => Self::Sse,
            BenchTransport::Ws => Self::WebSocket,
        }
    }
}

/// Options of `comet bench fanout` and `comet bench channels`.
#[derive(Debug, Args)]
pub struct BenchDeliveryArgs {
    #[command(flatten)]
    pub target: BenchTarget,
    /// Subscribers.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Messages per channel.
    #[arg(long, default_value_t = 1000)]
    pub messages: u64,
    /// Messages per second per channel (default: as fast as acknowledged).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Connections opened at once.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Subscribe (`token` query parameter) and publish with this token (an
    /// API key or a JWT).
    #[arg(long)]
    pub token: Option<String>,
    /// Publish to this server instead (another node of a cluster sharing
    /// one Redis: latency from a publish on one node to a delivery on
    /// another).
    #[arg(long)]
    pub publish_server: Option<String>,
    /// Subscribe every other subscriber to this server instead (a second
    /// node of a cluster: subscribers split over two nodes).
    #[arg(long)]
    pub also_server: Option<String>,
    /// How the subscribers connect.
    #[arg(long, value_enum, default_value_t = BenchTransport::Sse)]
    pub transport: BenchTransport,
}

/// Options of `comet bench longpoll`.
#[derive(Debug, Args)]
pub struct BenchLongPollArgs {
    #[command(flatten)]
    pub target: BenchTarget,
    /// Long-polling clients.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Messages per second.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// How long to publish.
    #[arg(long, default_value = "10s")]
    pub duration: Seconds,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
}

/// Options of `comet bench publish`.
#[derive(Debug, Args)]
pub struct BenchPublishArgs {
    #[command(flatten)]
    pub target: BenchTarget,
    /// Concurrent publishers, each on its own connection.
    #[arg(long, default_value_t = 16)]
    pub publishers: usize,
    /// How long to publish.
    #[arg(long, default_value = "10s")]
    pub duration: Seconds,
    /// Message size in bytes.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Channels the publishers spread over.
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// Every publish to a new channel name (a channel per user): what
    /// that costs the server over time.
    #[arg(long, conflicts_with = "channels")]
    pub fresh_channels: bool,
    /// Publish with this token (an API key or a JWT).
    #[arg(long)]
    pub token: Option<String>,
    /// Messages per request: 1 publishes one message per request to
    /// `/pub/{channel}`; more sends batches to `POST /pub` (Comet only).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Give every message an idempotency key of its own.
    #[arg(long)]
    pub idempotency_keys: bool,
}

/// Options of `comet serve`. Every option can also be set through the
/// environment variable named in its help, and in a configuration file
/// (`--config`).
#[derive(Clone, Debug, PartialEq, Args)]
pub struct ServeArgs {
    /// A TOML file of these options (keys in snake_case: `max_body =
    /// "2MiB"`); the environment and flags override it. SIGHUP reads it
    /// again (with the key files); open streams the new rules refuse end.
    #[arg(long, env = "COMET_CONFIG")]
    pub config: Option<PathBuf>,

    /// What to log: `error`, `warn`, `info`, `debug`, `trace`, or
    /// per-module directives (`comet_server=debug,info`).
    #[arg(long, env = "COMET_LOG", default_value = "info")]
    pub log: String,

    /// Address to listen on. Port 0 picks a free port; the address bound is
    /// printed as `listening on http://ADDR`.
    #[arg(long, env = "COMET_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Keep history in memory only: it is lost when the server stops, and
    /// clients resuming across a restart are told so (a `reset` gap).
    #[arg(long, env = "COMET_MEMORY", conflicts_with = "data_dir")]
    pub memory: bool,

    /// Keep history in Redis (`redis://[:PASSWORD@]HOST:PORT[/DB]`, or
    /// `rediss://` for TLS), so that every node pointed at the same Redis
    /// serves the same channels.
    /// The Redis must not evict keys (`maxmemory-policy noeviction`); what
    /// a crash of it can lose follows its persistence settings, which the
    /// log states at start.
    #[arg(long, env = "COMET_REDIS", conflicts_with = "memory")]
    pub redis: Option<String>,

    /// Messages the shared log in Redis keeps (about): how far a node may
    /// fall behind (paused, overloaded) and still catch up from the log;
    /// beyond it the node skips ahead and its subscribers read what it
    /// skipped from each channel's history (one read per channel).
    #[arg(long, env = "COMET_REDIS_LOG_LENGTH", default_value_t = 100_000)]
    pub redis_log_length: usize,

    /// Directory of the durable history store (the default store): every
    /// acknowledged publish is on disk before its answer, and history and
    /// ids continue across restarts. Created if missing; one server per
    /// directory.
    #[arg(long, env = "COMET_DATA_DIR", default_value = "./comet-data")]
    pub data_dir: PathBuf,

    /// Messages kept per channel.
    #[arg(long, env = "COMET_RETENTION_MESSAGES", default_value_t = 1000)]
    pub retention_messages: usize,

    /// Age after which messages are removed (e.g. 90s, 30m, 24h, 7d); 0
    /// keeps messages regardless of age.
    #[arg(long, env = "COMET_RETENTION_AGE", default_value = "0")]
    pub retention_age: Seconds,

    /// Most bytes of history the whole store keeps (e.g. 512MiB, 10GiB); the
    /// oldest messages of the store go first. 0: no total limit.
    #[arg(long, env = "COMET_MAX_STORE_BYTES", default_value = "1GiB")]
    pub max_store_bytes: ByteSize,

    /// Largest publish body (e.g. 1MiB, 64KiB, 1000000).
    #[arg(long, env = "COMET_MAX_BODY", default_value = "1MiB")]
    pub max_body: ByteSize,

    /// Most channels in one subscription.
    #[arg(long, env = "COMET_MAX_CHANNELS", default_value_t = 32)]
    pub max_channels: usize,

    /// Most messages in one batch publish (`POST /pub`); 413 beyond.
    #[arg(long, env = "COMET_MAX_BATCH_MESSAGES", default_value_t = 1000)]
    pub max_batch_messages: usize,

    /// Largest batch publish body (`POST /pub`); 413 beyond. Each message's
    /// data is also held to --max-body.
    #[arg(long, env = "COMET_MAX_BATCH_BODY", default_value = "8MiB")]
    pub max_batch_body: ByteSize,

    /// How long a publish's `Idempotency-Key` is remembered: a retry within
    /// this long of the original is answered with the original and stores
    /// nothing (e.g. 1h, 24h, 7d).
    #[arg(long, env = "COMET_IDEMPOTENCY_WINDOW", default_value = "24h")]
    pub idempotency_window: Seconds,

    /// Most idempotency keys remembered; beyond it the oldest are let go
    /// before their window ends (the metric
    /// comet_store_idempotency_keys shows how many are held).
    #[arg(long, env = "COMET_IDEMPOTENCY_MAX_KEYS", default_value_t = 1_000_000)]
    pub idempotency_max_keys: usize,

    /// Longest long-poll wait; longer `wait` values are capped to it.
    #[arg(long, env = "COMET_MAX_WAIT", default_value = "60s")]
    pub max_wait: Seconds,

    /// Reconnection delay announced to SSE clients (`retry:`).
    #[arg(long, env = "COMET_SSE_RETRY", default_value = "3s")]
    pub sse_retry: Seconds,

    /// Idle time after which streams send a heartbeat.
    #[arg(long, env = "COMET_HEARTBEAT", default_value = "15s")]
    pub heartbeat: Seconds,

    /// Most open connections; more are answered 503. Default: what the
    /// open-files limit allows (the server raises its soft limit to the hard
    /// one at start), less what the process needs besides connections.
    #[arg(long, env = "COMET_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Most open subscriptions (streams and polls); more are answered 503
    /// `too_many_subscribers`. Default: 95% of the connection limit, so a
    /// server full of subscribers still takes publishes and health checks.
    #[arg(long, env = "COMET_MAX_SUBSCRIBERS")]
    pub max_subscribers: Option<usize>,

    /// Threads serving connections (default: one per CPU this process may
    /// use, on a work-stealing scheduler). `1` runs a single-threaded
    /// scheduler instead: many long polls answered at once finish sooner
    /// (p99 about a third lower on one core), but a publisher that saturates
    /// the server gets its turn less often, so subscribers receive smaller
    /// batches and fan-out throughput drops.
    #[arg(long, env = "COMET_WORKER_THREADS")]
    pub worker_threads: Option<std::num::NonZeroUsize>,

    /// Time allowed to send a request head (408 beyond); also the idle
    /// keep-alive timeout.
    #[arg(long, env = "COMET_HEADER_TIMEOUT", default_value = "10s")]
    pub header_timeout: Seconds,

    /// Time allowed to send a whole request body once its head arrived
    /// (408 beyond).
    #[arg(long, env = "COMET_BODY_TIMEOUT", default_value = "30s")]
    pub body_timeout: Seconds,

    /// A client that accepts no bytes for this long is disconnected.
    #[arg(long, env = "COMET_WRITE_TIMEOUT", default_value = "30s")]
    pub write_timeout: Seconds,

    /// Origin of web pages allowed to use this server besides its own
    /// (e.g. `https://app.example.com`); repeat for several, `*` for any.
    /// Pages from other origins are refused (403).
    #[arg(
        long = "cors-origin",
        env = "COMET_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,

    /// HS256 secret for JWTs: the file's bytes (a trailing newline dropped;
    /// at least 32 bytes).
    #[arg(long, env = "COMET_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,

    /// A PEM public key for JWTs; its type chooses RS256, ES256 (P-256) or
    /// EdDSA (Ed25519). Repeat for several (key rotation).
    #[arg(long, env = "COMET_JWT_PUBLIC_KEY_FILE", value_delimiter = ',')]
    pub jwt_public_key_file: Vec<PathBuf>,

    /// The `iss` JWTs must carry (checked when given).
    #[arg(long, env = "COMET_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// The `aud` JWTs must carry (checked when given).
    #[arg(long, env = "COMET_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// API keys: one a line, `KEY` or `KEY PATTERN[,PATTERN…]` (the channels
    /// it may publish and subscribe to; `*` when omitted); `#` comments.
    #[arg(long, env = "COMET_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,

    /// Channels anyone may subscribe to without a token (a name, a prefix
    /// ending in `*`, or `*`). Repeat for several.
    #[arg(
        long = "public-channels",
        env = "COMET_PUBLIC_CHANNELS",
        value_delimiter = ',',
        value_parser = channel_pattern
    )]
    pub public_channels: Vec<String>,

    /// Peers that may publish without a token while no API keys or JWT keys
    /// are configured (CIDR, e.g. 10.0.0.0/8; `0.0.0.0/0` and `::/0` allow
    /// everyone). Default: loopback only. Repeat for several.
    #[arg(
        long = "anonymous-publish-from",
        env = "COMET_ANONYMOUS_PUBLISH_FROM",
        value_delimiter = ',',
        value_parser = network
    )]
    pub anonymous_publish_from: Vec<String>,

    /// Messages per followed channel kept in memory for live delivery;
    /// subscribers further behind are served from the store.
    #[arg(long, env = "COMET_LIVE_WINDOW", default_value_t = 256)]
    pub live_window: usize,

    /// Bytes of message data all live windows together keep in memory;
    /// beyond it the oldest go first (still served from the store).
    #[arg(long, env = "COMET_LIVE_WINDOW_BYTES", default_value = "64MiB")]
    pub live_window_bytes: ByteSize,

    /// Publish back-pressure: a publish is stored at once, and its answer
    /// waits while a live subscriber of its channel has more than this many
    /// of the channel's messages unread (this one included); 0 never waits.
    /// Subscribers reading stored history do not count.
    #[arg(long, env = "COMET_MAX_LAG", default_value_t = 16)]
    pub max_lag: usize,

    /// The longest one publish waits for back-pressure; a subscriber
    /// still behind then no longer holds publishes back until it has
    /// caught up.
    #[arg(long, env = "COMET_MAX_LAG_WAIT", default_value = "100ms")]
    pub max_lag_wait: Seconds,

    /// Channels whose messages are all gone that are remembered exactly
    /// (name and last id, for telling resuming clients of the gap); older
    /// ones are remembered approximately, in a fixed 512 KiB table.
    #[arg(long, env = "COMET_FORGOTTEN_CHANNELS", default_value_t = 65_536)]
    pub forgotten_channels: usize,
}

/// A channel pattern, checked as it is read.
fn channel_pattern(text: &str) -> Result<String, String> {
    comet_server::comet_auth::ChannelPattern::parse(text.trim())
        .map(|_| text.trim().to_string())
        .map_err(|error| error.to_string())
}

/// A network (`10.0.0.0/8`) or an address, checked as it is read.
fn network(text: &str) -> Result<String, String> {
    crate::auth::network_of(text.trim())
        .map(|_| text.trim().to_string())
        .map_err(|_| format!("{text:?} is not a network like 10.0.0.0/8 or an address"))
}
