# Cross-compiling for 64-bit ARM Linux with Debian's cross toolchain
# (apt-get install g++-aarch64-linux-gnu; run the results with
# qemu-aarch64 -L /usr/aarch64-linux-gnu, package qemu-user):
#   cmake -S . -B build/aarch64 -G Ninja -DSLIMTORCH_PYTHON=OFF -DSLIMTORCH_CUDA=OFF \
#         -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/aarch64-linux-gnu.cmake
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(SLIMTORCH_CROSS_PREFIX aarch64-linux-gnu- CACHE STRING "Prefix of the cross tools")
set(CMAKE_C_COMPILER ${SLIMTORCH_CROSS_PREFIX}gcc)
set(CMAKE_CXX_COMPILER ${SLIMTORCH_CROSS_PREFIX}g++)

set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# ctest runs the test programs through the emulator; the environment
# variable QEMU_CPU picks the emulated CPU model (QEMU_CPU=max: every feature;
# QEMU_CPU=cortex-a53: no dot product, no i8mm).
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L /usr/aarch64-linux-gnu)
