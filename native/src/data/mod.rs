//! Data: ImageFolder scanning and decoding, sharding, batching, and the
//! built-in demo data set.
pub mod demo;
pub mod imagefolder;
pub mod loader;
pub mod sampler;
