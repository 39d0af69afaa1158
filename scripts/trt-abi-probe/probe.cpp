// TensorRT ABI probe: compiled against a TensorRT include directory by scripts/check-trt-abi.ts, it prints what the
// koffi runtime (src/engine/tensorrt/) relies on, one fact per line:
//   version MAJOR MINOR PATCH
//   slot Class.method BYTE_OFFSET | missing | signature | not-virtual
//   vtable Class INDEX ENTRY          (entries identified by calling each slot of a compiled subclass)
//   impl Wrapper BYTE_OFFSET          (where the public wrapper keeps its apiv pointer)
//   layout Struct.field VALUE
//   enum Enum.member VALUE | missing
//   function name ok | signature
// The list of methods, functions and enum members comes from src/engine/tensorrt/abi.ts (probe_items.inc, generated).
// Needs only headers: nothing here calls into libnvinfer.
#include <NvInferRuntime.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <new>
#include <type_traits>

namespace probe
{

// On the Itanium C++ ABI a pointer to a virtual member function is {ptr, adj}: on x86-64 ptr = 1 + vtable offset;
// on AArch64 (ARM's variant) ptr = vtable offset and the virtual flag is adj's low bit.
template <typename Pmf>
long vtableOffset(Pmf pmf)
{
    static_assert(sizeof(Pmf) == 2 * sizeof(void*), "not an Itanium-ABI member function pointer");
    struct Rep
    {
        std::uintptr_t ptr;
        std::ptrdiff_t adj;
    } rep;
    std::memcpy(&rep, &pmf, sizeof rep);
#if defined(__aarch64__) || defined(__arm__)
    return (rep.adj & 1) ? static_cast<long>(rep.ptr) : -1;
#else
    return (rep.ptr & 1) ? static_cast<long>(rep.ptr - 1) : -1;
#endif
}

void reportSlot(char const* key, long offset)
{
    if (offset == -1)
        std::printf("slot %s not-virtual\n", key);
    else if (offset == -2)
        std::printf("slot %s missing\n", key);
    else if (offset == -3)
        std::printf("slot %s signature\n", key);
    else
        std::printf("slot %s %ld\n", key, offset);
}

// What the last call through a vtable entry did (reset before each call).
struct Trace
{
    bool destroyed;
    bool deleted;
    char const* method;
};
Trace trace;

template <typename Wrapper>
struct FakeWrapper final : Wrapper
{
    ~FakeWrapper() noexcept override
    {
        trace.destroyed = true;
    }
    static void operator delete(void* p) noexcept
    {
        trace.deleted = true;
        ::operator delete(p);
    }
};

template <typename Wrapper>
struct PeekImpl : Wrapper
{
    static long implOffset()
    {
        auto member = &PeekImpl::mImpl;
        static_assert(sizeof(member) == sizeof(std::ptrdiff_t), "not an Itanium-ABI data member pointer");
        std::ptrdiff_t offset;
        std::memcpy(&offset, &member, sizeof offset);
        return static_cast<long>(offset);
    }
};

using Entry = void (*)(void*);

Entry entryAt(void* object, int index)
{
    Entry const* vtable = *reinterpret_cast<Entry const* const*>(object);
    return vtable[index];
}

char const* identify()
{
    if (trace.method)
        return trace.method;
    if (trace.deleted)
        return "~deleting";
    if (trace.destroyed)
        return "~complete";
    return "unknown";
}

template <typename Wrapper>
void probeWrapper(char const* name)
{
    std::printf("impl %s %ld\n", name, PeekImpl<Wrapper>::implOffset());
    // the wrappers declare no virtual method besides the destructor: two entries
    for (int index = 0; index < 2; ++index)
    {
        Wrapper* object = new FakeWrapper<Wrapper>();
        trace = Trace{};
        entryAt(object, index)(object);
        std::printf("vtable %s %d %s\n", name, index, identify());
    }
}

struct FakeLogger final : nvinfer1::ILogger
{
    void log(Severity, nvinfer1::AsciiChar const*) noexcept override
    {
        trace.method = "log";
    }
#if NV_TENSORRT_MAJOR >= 11
    nvinfer1::InterfaceInfo getInterfaceInfo() const noexcept override
    {
        trace.method = "getInterfaceInfo";
        return {"ILogger", 1, 0};
    }
    nvinfer1::APILanguage getAPILanguage() const noexcept override
    {
        trace.method = "getAPILanguage";
        return nvinfer1::APILanguage::kCPP;
    }
#endif
    ~FakeLogger() noexcept override
    {
        trace.destroyed = true;
    }
    static void operator delete(void* p) noexcept
    {
        trace.deleted = true;
        ::operator delete(p);
    }
};

void probeLogger(int namedVirtuals)
{
    // every entry is a named method or one of the two destructor entries
    for (int index = 0; index < namedVirtuals + 2; ++index)
    {
        nvinfer1::ILogger* object = new FakeLogger();
        trace = Trace{};
        entryAt(object, index)(object);
        std::printf("vtable ILogger %d %s\n", index, identify());
    }
}

template <typename T>
void probeStructBase(char const* name)
{
    std::printf("layout %s.size %zu\n", name, sizeof(T));
    std::printf("layout %s.trivial %d\n", name, std::is_trivially_copyable_v<T> ? 1 : 0);
}

} // namespace probe

// Takes the method's address through exactly the expected pointer-to-member type; `C` names the class.
#define PROBE_SLOT(KEY, CLASS, NAME, ...)                                                                              \
    do                                                                                                                 \
    {                                                                                                                  \
        long offset = []<typename C = CLASS>() -> long {                                                             \
            if constexpr (requires { static_cast<__VA_ARGS__>(&C::NAME); })                                            \
                return probe::vtableOffset(static_cast<__VA_ARGS__>(&C::NAME));                                        \
            else if constexpr (requires { &C::NAME; })                                                                 \
                return -3;                                                                                             \
            else                                                                                                       \
                return -2;                                                                                             \
        }();                                                                                                           \
        probe::reportSlot(KEY, offset);                                                                                \
        if (offset >= 0 && std::strncmp(KEY, "ILogger.", 8) == 0)                                                      \
            ++loggerVirtuals;                                                                                          \
    } while (0)

#define PROBE_FUNCTION(KEY, NAME, ...)                                                                                 \
    std::printf("function %s %s\n", KEY, std::is_same_v<decltype(&::NAME), __VA_ARGS__> ? "ok" : "signature")

#define PROBE_ENUM(KEY, ENUM, MEMBER)                                                                                  \
    do                                                                                                                 \
    {                                                                                                                  \
        []<typename E = ENUM>() {                                                                                      \
            if constexpr (requires { E::MEMBER; })                                                                     \
                std::printf("enum %s %d\n", KEY, static_cast<int>(E::MEMBER));                                        \
            else                                                                                                       \
                std::printf("enum %s missing\n", KEY);                                                                 \
        }();                                                                                                           \
    } while (0)

int main()
{
    std::printf("version %d %d %d\n", NV_TENSORRT_MAJOR, NV_TENSORRT_MINOR, NV_TENSORRT_PATCH);
    int loggerVirtuals = 0;
#include "probe_items.inc"

    probe::probeWrapper<nvinfer1::IRuntime>("IRuntime");
    probe::probeWrapper<nvinfer1::ICudaEngine>("ICudaEngine");
    probe::probeWrapper<nvinfer1::IExecutionContext>("IExecutionContext");
    probe::probeLogger(loggerVirtuals);

    probe::probeStructBase<nvinfer1::Dims64>("Dims64");
    std::printf("layout Dims64.nbDims %zu\n", offsetof(nvinfer1::Dims64, nbDims));
    std::printf("layout Dims64.d %zu\n", offsetof(nvinfer1::Dims64, d));
    std::printf("layout Dims64.maxDims %d\n", static_cast<int>(nvinfer1::Dims64::MAX_DIMS));
    probe::probeStructBase<nvinfer1::InterfaceInfo>("InterfaceInfo");
    std::printf("layout InterfaceInfo.kind %zu\n", offsetof(nvinfer1::InterfaceInfo, kind));
    std::printf("layout InterfaceInfo.major %zu\n", offsetof(nvinfer1::InterfaceInfo, major));
    std::printf("layout InterfaceInfo.minor %zu\n", offsetof(nvinfer1::InterfaceInfo, minor));
    return 0;
}
