//! Models a test scripts (what each version answers), and a metric sink that keeps what
//! it is given: the shadow function's use case runs on these.

use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::domain::error::{Error, Result};
use crate::ports::{Answer, Datum, MetricSink, VersionInvoker};

type Answers = dyn Fn(&str, &Value) -> std::result::Result<Value, String> + Send + Sync;

/// Each version answers as `answer(version, payload)` says, in 1 ms; every call is kept.
#[derive(Clone)]
pub struct Models {
    answer: Arc<Answers>,
    asked: Arc<Mutex<Vec<(String, Value)>>>,
    refused: Arc<Mutex<Vec<String>>>,
}

impl Models {
    pub fn new(answer: impl Fn(&str, &Value) -> std::result::Result<Value, String> + Send + Sync + 'static) -> Self {
        Models { answer: Arc::new(answer), asked: Arc::default(), refused: Arc::default() }
    }

    /// Invokes of `version` fail as a throttled call does.
    pub fn fail_invokes_of(&self, version: &str) {
        self.refused.lock().unwrap().push(version.to_owned());
    }

    /// (version, payload) of every invoke, in order.
    pub fn asked(&self) -> Vec<(String, Value)> {
        self.asked.lock().unwrap().clone()
    }
}

impl VersionInvoker for Models {
    async fn invoke(&self, _function: &str, version: &str, payload: &Value) -> Result<Answer> {
        if self.refused.lock().unwrap().iter().any(|v| v == version) {
            return Err(Error::Service {
                operation: "lambda:Invoke",
                detail: "TooManyRequestsException: Rate exceeded (HTTP 429)".into(),
                retryable: true,
            });
        }
        self.asked.lock().unwrap().push((version.to_owned(), payload.clone()));
        Ok(Answer { outcome: (self.answer)(version, payload), millis: 1.0 })
    }
}

/// Keeps every datum put; can be told to fail.
#[derive(Clone, Default)]
pub struct Sink {
    data: Arc<Mutex<Vec<Datum>>>,
    failing: Arc<Mutex<bool>>,
}

impl Sink {
    pub fn fail(&self) {
        *self.failing.lock().unwrap() = true;
    }

    pub fn data(&self) -> Vec<Datum> {
        self.data.lock().unwrap().clone()
    }
}

impl MetricSink for Sink {
    async fn put(&self, _namespace: &str, data: &[Datum]) -> Result<()> {
        if *self.failing.lock().unwrap() {
            return Err(Error::Service {
                operation: "cloudwatch:PutMetricData",
                detail: "HTTP 500".into(),
                retryable: true,
            });
        }
        self.data.lock().unwrap().extend_from_slice(data);
        Ok(())
    }
}
