// IDX files, the format of MNIST and Fashion-MNIST: a 4-byte magic number (0, 0, data type,
// number of dimensions), one big-endian 32-bit size per dimension, then the data in row-major
// order. Files may be gzip-compressed (detected by the gzip magic bytes, not the name).
#pragma once

#include <torch/torch.h>

#include <string>

namespace onestep {

// Reads the unsigned-byte IDX file `path` (raw or gzip) as a uint8 tensor with the file's
// dimensions (1 to 4 of them), e.g. N x 28 x 28 for images, N for labels. Throws UserError
// naming the file for an unreadable file, a corrupt or truncated gzip stream, a bad magic
// number, an unsupported data type, a payload shorter or longer than the header promises, or
// more than 2 GiB of data.
torch::Tensor read_idx(const std::string& path);

}  // namespace onestep
