//! One module per subcommand.

pub mod bootstrap;
pub mod ca;
pub mod crds;
pub mod proxy_config;
pub mod serve;
pub mod validate;
