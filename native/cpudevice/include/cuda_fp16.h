// moe4j CPU device: the fp16 type and intrinsics are defined in ../emu.h (force-included).
#pragma once
