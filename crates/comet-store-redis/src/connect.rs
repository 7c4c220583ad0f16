//! Reaching Redis: connecting (and waiting for a Redis that is not up
//! yet), refusing one Comet cannot use (too old, or free to evict its
//! keys), saying what a crash of it can lose, and keeping passwords out of
//! what is logged.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::{OpenError, RESPONSE_TIMEOUT};

/// The oldest Redis the scripts run on (`XTRIM … MINID` is 6.2's).
const OLDEST_REDIS: (u32, u32) = (6, 2);

/// Refuses a Redis older than [`OLDEST_REDIS`], from its `INFO server`.
fn check_version(info: &str) -> Result<(), String> {
    let version = info
        .lines()
        .find_map(|line| line.strip_prefix("redis_version:"))
        .map(str::trim)
        .ok_or("INFO server names no redis_version")?;
    let mut parts = version.split('.').map(|part| part.parse::<u32>().ok());
    let (Some(Some(major)), Some(Some(minor))) = (parts.next(), parts.next()) else {
        return Err(format!("cannot read its version {version:?}"));
    };
    if (major, minor) < OLDEST_REDIS {
        return Err(format!(
            "it is Redis {version}; Comet needs Redis {}.{} or newer",
            OLDEST_REDIS.0, OLDEST_REDIS.1
        ));
    }
    Ok(())
}

/// Connects, waiting for a Redis that cannot be reached yet (refused,
/// dropped or timed out: it is starting, or the network is not up): every
/// attempt that fails is logged, and tried again after a delay that doubles
/// up to 5 s. Any other failure (a wrong password, a certificate that
/// cannot be verified, a URL Redis refuses) is final.
pub(crate) async fn connect(
    client: &redis::Client,
    url: &str,
) -> redis::RedisResult<ConnectionManager> {
    let mut delay = Duration::from_millis(100);
    loop {
        // One attempt each: this loop retries, saying so.
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1);
        match ConnectionManager::new_with_config(client.clone(), config).await {
            Ok(connection) => return Ok(connection),
            Err(error)
                if error.is_connection_refusal()
                    || error.is_timeout()
                    || error.is_connection_dropped() =>
            {
                tracing::warn!(
                    url,
                    %error,
                    retry_in_ms = delay.as_millis() as u64,
                    "Redis cannot be reached; waiting for it"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(error) => return Err(error),
        }
    }
}

/// Refuses a Redis older than the scripts need or that may evict Comet's
/// keys, and says what a crash of this Redis can lose of what was
/// acknowledged.
pub(crate) async fn check_settings(
    connection: &mut ConnectionManager,
    url: &str,
) -> Result<(), OpenError> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(connection)
        .await
        .map_err(|error| OpenError::Redis {
            url: url.to_string(),
            error: error.to_string(),
        })?;
    check_version(&info).map_err(|error| OpenError::Redis {
        url: url.to_string(),
        error,
    })?;
    let setting = |name: &'static str| {
        let mut connection = connection.clone();
        async move {
            let pair: Vec<String> = redis::cmd("CONFIG")
                .arg("GET")
                .arg(name)
                .query_async(&mut connection)
                .await?;
            Ok::<_, redis::RedisError>(pair.get(1).cloned().unwrap_or_default())
        }
    };
    let policy = match setting("maxmemory-policy").await {
        Ok(policy) => policy,
        Err(error) => {
            tracing::warn!(
                %error,
                "cannot read Redis's settings (CONFIG GET refused); make sure its \
                 maxmemory-policy is noeviction, or Redis may delete Comet's history"
            );
            return Ok(());
        }
    };
    if policy != "noeviction" {
        return Err(OpenError::Redis {
            url: url.to_string(),
            error: format!(
                "its maxmemory-policy is {policy}: Redis could evict Comet's history, ids and \
                 idempotency keys when memory runs short. Set `maxmemory-policy noeviction` \
                 (CONFIG SET maxmemory-policy noeviction, and in redis.conf)"
            ),
        });
    }
    let appendonly = setting("appendonly").await.unwrap_or_default();
    let appendfsync = setting("appendfsync").await.unwrap_or_default();
    let save = setting("save").await.unwrap_or_default();
    match (appendonly.as_str(), appendfsync.as_str()) {
        ("yes", "always") => tracing::info!(
            "Redis fsyncs every write (appendonly yes, appendfsync always): a Redis crash \
             loses nothing acknowledged"
        ),
        ("yes", "everysec") => tracing::warn!(
            "Redis fsyncs once a second (appendfsync everysec): a crash of the Redis machine \
             can lose up to about a second of acknowledged publishes; appendfsync always \
             loses none"
        ),
        ("yes", other) => tracing::warn!(
            "Redis leaves fsync to the operating system (appendfsync {other}): a crash of the \
             Redis machine can lose the last tens of seconds of acknowledged publishes"
        ),
        _ if save.trim().is_empty() => tracing::warn!(
            "Redis keeps nothing on disk (appendonly no, no save points): a Redis restart \
             loses the whole history; appendonly yes with appendfsync always loses nothing \
             acknowledged"
        ),
        _ => tracing::warn!(
            save = %save,
            "Redis only takes snapshots (appendonly no): a Redis crash loses what was \
             acknowledged since the last one; appendonly yes with appendfsync always loses \
             nothing acknowledged"
        ),
    }
    Ok(())
}

/// The URL with its password replaced, for logs and errors.
pub(crate) fn without_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_a_log_line() {
        assert_eq!(
            without_password("redis://:secret@10.0.0.1:6379/2"),
            "redis://***@10.0.0.1:6379/2"
        );
        assert_eq!(
            without_password("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }

    #[test]
    fn redis_before_6_2_is_refused_by_its_version() {
        let info = |version: &str| {
            format!("# Server\r\nredis_version:{version}\r\nredis_mode:standalone\r\n")
        };
        assert!(check_version(&info("7.0.15")).is_ok());
        assert!(check_version(&info("6.2.0")).is_ok());
        assert!(check_version(&info("10.0.1")).is_ok());
        let refused = check_version(&info("6.0.16")).expect_err("6.0 is too old");
        assert!(
            refused.contains("6.0.16") && refused.contains("6.2"),
            "{refused}"
        );
        assert!(check_version(&info("5.0.7")).is_err());
        assert!(check_version("# Server\r\n").is_err());
    }
}
