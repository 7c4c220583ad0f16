//! Load generation for `comet bench`: scenarios that drive a push server
//! over real HTTP, loopback only, each bounded in time, and a report of
//! figures (rates and latency percentiles), never a pass/fail verdict.
//!
//! The client side is deliberately lean (`http`: a bare HTTP/1.1 client on
//! a `TcpStream`) so that, on a small machine, the figures describe the
//! server rather than the load generator.

pub mod delivery;
pub mod http;
pub mod idle;
pub mod longpoll;
mod payload;
pub mod publish;
mod report;
mod sse;
pub mod subscriber;
pub mod target;
mod tracker;
mod ws;

pub use report::Latencies;
pub use tracker::Completeness;
