//! Scaling policy: turns proxy observations into a desired replica count (pure, clock-free).

mod decide;
pub use decide::*;

#[cfg(test)]
mod tests;
