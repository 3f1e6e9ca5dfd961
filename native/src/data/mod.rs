//! Data: ImageFolder scanning, decoding, RandomResizedCrop, sharding,
//! batching on worker threads, and the data sets selfsup can write
//! (the built-in demo, Fashion-MNIST from its IDX files).
pub mod buffer;
pub mod crop;
#[cfg(feature = "testing")]
pub mod debug;
pub mod decode;
pub mod demo;
pub mod idx;
pub mod imagefolder;
pub mod loader;
pub mod sampler;
pub mod source;
#[cfg(test)]
mod loader_tests;
#[cfg(test)]
mod testing;
