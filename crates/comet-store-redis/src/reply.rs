//! Reading a script's answer: a flat array of strings and numbers, taken
//! in order.

use std::collections::VecDeque;

use comet_store::StoreError;
use redis::Value;

/// A script's answer, consumed from the front.
pub(crate) struct Reply(VecDeque<Value>);

impl Reply {
    pub(crate) fn new(values: Vec<Value>) -> Self {
        Self(values.into())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn next(&mut self) -> Result<Value, StoreError> {
        self.0
            .pop_front()
            .ok_or_else(|| StoreError::Unavailable("a Redis script answered too little".into()))
    }

    /// The next value's bytes.
    pub(crate) fn bytes(&mut self) -> Result<Vec<u8>, StoreError> {
        match self.next()? {
            Value::BulkString(bytes) => Ok(bytes),
            Value::SimpleString(text) => Ok(text.into_bytes()),
            Value::Int(number) => Ok(number.to_string().into_bytes()),
            other => Err(unexpected(&other)),
        }
    }

    /// The next value as text.
    pub(crate) fn text(&mut self) -> Result<String, StoreError> {
        String::from_utf8(self.bytes()?)
            .map_err(|_| StoreError::Unavailable("a Redis script answered invalid UTF-8".into()))
    }

    /// The next value as a number (an integer, or text of one).
    pub(crate) fn number(&mut self) -> Result<u64, StoreError> {
        match self.next()? {
            Value::Int(number) => u64::try_from(number).map_err(|_| negative(number)),
            Value::BulkString(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|text| text.parse().ok())
                .ok_or_else(|| {
                    StoreError::Unavailable(format!(
                        "a Redis script answered {:?} for a number",
                        String::from_utf8_lossy(&bytes)
                    ))
                }),
            other => Err(unexpected(&other)),
        }
    }
}

fn unexpected(value: &Value) -> StoreError {
    StoreError::Unavailable(format!("a Redis script answered {value:?}"))
}

fn negative(number: i64) -> StoreError {
    StoreError::Unavailable(format!("a Redis script answered {number} for a count"))
}
