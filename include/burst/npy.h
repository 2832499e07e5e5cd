// Reading and writing NumPy .npy files of float32 (the CLI's and the Python tests' exchange
// format). The reader validates everything it reads, so a truncated or hostile file gives a
// burst::Error, never a crash or an oversized allocation; it reads the header dict as
// strictly as numpy does (a header numpy refuses is refused, a repeated key counts last).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace burst {

struct NpyArray {
  std::vector<std::int64_t> shape;
  std::vector<float> data;  // C order
};

// Reads a little-endian float32, C-order array; `what` names the argument in errors.
NpyArray read_npy(const std::string& path, const std::string& what);

// The shape of a .npy file, with every check read_npy makes (header, dtype, order, data size
// against the shape) but without reading the data: sizing a problem before loading it.
std::vector<std::int64_t> read_npy_shape(const std::string& path, const std::string& what);

// Writes data (C order, product(shape) floats) as a float32 .npy file. Throws OutputError,
// naming the file and the system's reason, when any write or the close fails.
void write_npy(const std::string& path, const float* data, const std::vector<std::int64_t>& shape);

}  // namespace burst
