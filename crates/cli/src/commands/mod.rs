//! One module per subcommand.

pub mod devices;
pub mod generate;
pub mod inspect;
