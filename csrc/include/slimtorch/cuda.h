// Shared declarations for the CUDA kernel library. Launchers take the stream
// torch is using (torch.cuda.current_stream().cuda_stream) and never
// synchronize; results stay on the device until the Python side reads them.
#pragma once

#include "slimtorch/common.h"

struct CUstream_st;

namespace slimtorch::cuda {

// Same type as cudaStream_t, declared without the CUDA headers so that
// plain C++ translation units (the bindings) can name it.
using Stream = CUstream_st*;

}  // namespace slimtorch::cuda
