//! What the web configuration puts around every request: the rate limit and basic
//! authentication it must pass (in that order, as in the exporter toolkit), and the
//! headers added to every response, refusals included.

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, StatusCode};

use super::auth::{BasicAuth, Denied};
use super::self_metrics::Refused;
use crate::web_config::{RateLimit, WebConfig};

/// A token bucket: `burst` tokens, one back every `interval`.
#[derive(Debug)]
struct Bucket {
    limit: RateLimit,
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled);
        self.refilled = now;
        let burst = f64::from(self.limit.burst);
        self.tokens =
            (self.tokens + elapsed.as_secs_f64() / self.limit.interval.as_secs_f64()).min(burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The checks and headers of one server.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    auth: Option<BasicAuth>,
    bucket: Option<Mutex<Bucket>>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Gate {
    /// The gate of `web` (none: everything passes, nothing is added).
    pub(crate) fn new(web: Option<&WebConfig>) -> Self {
        let Some(web) = web else {
            return Self::default();
        };
        Self {
            auth: web
                .basic_auth()
                .then(|| BasicAuth::new(&web.users, &web.auth_excluded_paths)),
            bucket: web.rate_limit.map(|limit| {
                Mutex::new(Bucket {
                    limit,
                    tokens: f64::from(limit.burst),
                    refilled: Instant::now(),
                })
            }),
            headers: web.headers.clone(),
        }
    }

    /// Whether any request can be refused.
    pub(crate) fn refuses(&self) -> bool {
        self.auth.is_some() || self.bucket.is_some()
    }

    /// Lets `req` through, or says why not.
    pub(crate) async fn admit<B>(&self, req: &Request<B>) -> Result<(), Refused> {
        if let Some(bucket) = &self.bucket {
            let allowed = bucket
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(Instant::now());
            if !allowed {
                return Err(Refused::RateLimited);
            }
        }
        match &self.auth {
            Some(auth) if !auth.excluded(req.uri().path()) => auth
                .check(req.headers().get(header::AUTHORIZATION))
                .await
                .map_err(|denied| match denied {
                    Denied::Missing => Refused::NoCredentials,
                    Denied::Wrong => Refused::WrongCredentials,
                }),
            _ => Ok(()),
        }
    }

    /// The status and extra header of a refusal.
    pub(crate) fn refusal(
        why: Refused,
    ) -> (StatusCode, &'static str, Option<(HeaderName, HeaderValue)>) {
        match why {
            Refused::NoCredentials | Refused::WrongCredentials => (
                StatusCode::UNAUTHORIZED,
                "unauthorized\n",
                Some((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"shmetrics\", charset=\"UTF-8\""),
                )),
            ),
            Refused::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "too many requests\n", None),
        }
    }

    /// Adds the configured headers.
    pub(crate) fn decorate(&self, headers: &mut http::HeaderMap) {
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bucket_allows_burst_then_one_per_interval() {
        let start = Instant::now();
        let mut b = Bucket {
            limit: RateLimit {
                interval: Duration::from_millis(100),
                burst: 2,
            },
            tokens: 2.0,
            refilled: start,
        };
        assert!(b.take(start));
        assert!(b.take(start));
        assert!(!b.take(start));
        assert!(!b.take(start + Duration::from_millis(50)));
        assert!(b.take(start + Duration::from_millis(100)));
        assert!(!b.take(start + Duration::from_millis(100)));
        // Never more than the burst, however long the pause.
        let later = start + Duration::from_secs(60);
        assert!(b.take(later));
        assert!(b.take(later));
        assert!(!b.take(later));
    }
}
