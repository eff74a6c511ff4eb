// Safetensors reader and writer (https://huggingface.co/docs/safetensors): an 8-byte
// little-endian header length N, a JSON header of N bytes mapping tensor names to
// {dtype, shape, data_offsets} plus an optional "__metadata__" map of strings, then the raw
// little-endian tensor bytes. Our own implementation: every header field is bounds-checked,
// and files are written atomically (temporary file in the same folder, fsync, rename).
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>

namespace onestep {

struct SafetensorsFile {
  std::map<std::string, torch::Tensor> tensors;     // CPU, contiguous
  std::map<std::string, std::string> metadata;      // "__metadata__"
};

// Writes atomically: a crash leaves either the old file or the new one, never a partial file.
// Supported dtypes: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL.
void write_safetensors(const std::string& path, const SafetensorsFile& file);

// Reads and validates the whole file. Throws UserError naming the file and the problem
// (truncated file, header length beyond the file, bad JSON, unknown dtype, shape/dtype not
// matching the byte range, offsets out of range or overlapping, data not covered).
SafetensorsFile read_safetensors(const std::string& path);

}  // namespace onestep
