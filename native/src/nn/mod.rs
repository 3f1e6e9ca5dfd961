//! Networks: layers with PyTorch's names and init, backbones, heads.
pub mod heads;
pub mod init;
pub mod layers;
pub mod resnet;
