// moe4j CPU device: the registry of kernels compiled into libmoe4j_cpudevice.so.
//
// build.sh generates one translation unit per native/*.cu (gen-registry.pl): it includes the .cu
// file and then registers every kernel it declares (name and __launch_bounds__ are read from the
// declaration; the parameter types come from the compiler, through make_kernel's template
// deduction), so the registry cannot drift from the kernels. cuModuleGetFunction looks kernels up
// here; cuLaunchKernel and cuFuncGetParamInfo check launches against the parameter list.
#pragma once

#include <cstddef>
#include <cstring>
#include <string>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <vector>

namespace moe4j_emu {

struct ParamInfo {
    size_t size;
    size_t align;
    size_t offset;     // in the kernel's parameter buffer (each parameter at its natural alignment)
    std::string type;  // C++ type, demangled
};

struct KernelInfo {
    const char* name;
    const char* family;  // the .cu file, without extension
    int maxThreads;      // __launch_bounds__ maximum threads per block, 0 when the kernel declares none
    std::vector<ParamInfo> params;
    size_t paramBytes;   // size of the packed parameter buffer
    void (*fn)();
    // Copies each parameter's value from its slot (kernelParams[i]) into a new argument tuple.
    void* (*unpack)(void* const* slots);
    // Calls the kernel with the tuple's values (one CUDA thread).
    void (*run)(void (*fn)(), void* args);
    void (*destroy)(void* args);
    size_t argsBytes;    // sizeof the tuple (memcheck allows reads of it)
};

void register_kernel(KernelInfo* k);
const std::vector<KernelInfo*>& kernels();
std::string demangle(const char* mangled);

template <typename... A>
struct Thunk {
    using Tuple = std::tuple<std::remove_cv_t<A>...>;
    static void* unpack(void* const* slots) {
        Tuple* t = new Tuple();
        size_t i = 0;
        std::apply([&](auto&... x) { ((std::memcpy(static_cast<void*>(&x), slots[i++], sizeof(x))), ...); }, *t);
        return t;
    }
    static void run(void (*fn)(), void* args) {
        std::apply(reinterpret_cast<void (*)(A...)>(fn), *static_cast<Tuple*>(args));
    }
    static void destroy(void* args) { delete static_cast<Tuple*>(args); }
};

template <typename... A>
KernelInfo* make_kernel(const char* name, const char* family, int maxThreads, void (*fn)(A...)) {
    static_assert((std::is_trivially_copyable_v<std::remove_cv_t<A>> && ...), "kernel parameters are copied bytewise");
    KernelInfo* k = new KernelInfo();
    k->name = name;
    k->family = family;
    k->maxThreads = maxThreads;
    size_t offset = 0;
    (
        [&] {
            using T = std::remove_cv_t<A>;
            offset = (offset + alignof(T) - 1) / alignof(T) * alignof(T);
            k->params.push_back(ParamInfo{sizeof(T), alignof(T), offset, demangle(typeid(A).name())});
            offset += sizeof(T);
        }(),
        ...);
    k->paramBytes = offset;
    k->fn = reinterpret_cast<void (*)()>(fn);
    k->unpack = &Thunk<A...>::unpack;
    k->run = &Thunk<A...>::run;
    k->destroy = &Thunk<A...>::destroy;
    k->argsBytes = sizeof(typename Thunk<A...>::Tuple);
    register_kernel(k);
    return k;
}

}  // namespace moe4j_emu
