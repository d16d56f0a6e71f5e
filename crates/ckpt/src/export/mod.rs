//! Export to formats that serving stacks run: [`onnx`].

pub mod onnx;
mod proto;
