// moe4j CPU device: the bf16 type and intrinsics are defined in ../emu.h (force-included).
#pragma once
