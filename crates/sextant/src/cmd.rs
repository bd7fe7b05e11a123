//! One module per subcommand.

pub mod crds;
pub mod proxy_config;
pub mod validate;
