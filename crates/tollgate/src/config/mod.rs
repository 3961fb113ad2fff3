//! Configuration: the YAML file plus the environment, read raw, validated and
//! frozen into [`Config`]. No sockets here.

mod model;

pub use model::*;
