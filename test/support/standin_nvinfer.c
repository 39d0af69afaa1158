/*
 * The two extern "C" entry points of libnvinfer, for test/support/trt_standin.ts: a stand-in TensorRT whose
 * objects are built in JS. Built by the stand-in with `cc -shared -fPIC` as libnvinfer.so.<major>.
 */
#include <stdint.h>

static int32_t version;
static void *(*create_runtime)(void *logger, int32_t version);

int32_t getInferLibVersion(void) { return version; }

void *createInferRuntime_INTERNAL(void *logger, int32_t requested) {
  return create_runtime ? create_runtime(logger, requested) : 0;
}

void florence_standin_configure(int32_t library_version, void *(*create)(void *, int32_t)) {
  version = library_version;
  create_runtime = create;
}
