/*
 * Prints the CPython struct offsets the profiler needs, as one JSON object,
 * from the headers of the interpreter it is compiled against (internal
 * headers included). Built and run by gen-offsets.sh for each installed
 * CPython; the output is python_offsets.json.
 */
#define Py_BUILD_CORE 1
#include <Python.h>
#include <stddef.h>
#include <stdio.h>
#include "internal/pycore_runtime.h"
#include "internal/pycore_interp.h"
#if PY_VERSION_HEX >= 0x030B0000
#include "internal/pycore_frame.h"
#else
#include "frameobject.h"
#endif

#define F(name, value) printf("    \"%s\": %ld,\n", name, (long)(value))

int main(void)
{
    printf("  \"%d.%d\": {\n", PY_MAJOR_VERSION, PY_MINOR_VERSION);
    F("runtime_interpreters_head", offsetof(_PyRuntimeState, interpreters.head));
#if PY_VERSION_HEX >= 0x030B0000
    F("interp_threads_head", offsetof(PyInterpreterState, threads.head));
#else
    F("interp_threads_head", offsetof(PyInterpreterState, tstate_head));
#endif
    F("tstate_next", offsetof(PyThreadState, next));
#if PY_VERSION_HEX >= 0x030B0000
    F("tstate_thread_key", offsetof(PyThreadState, native_thread_id));
    F("thread_key_is_pthread", 0);
#else
    /* 3.10 has no native thread id: pthread_self() is the thread pointer. */
    F("tstate_thread_key", offsetof(PyThreadState, thread_id));
    F("thread_key_is_pthread", 1);
#endif
#if PY_VERSION_HEX >= 0x030D0000
    F("tstate_frame", offsetof(PyThreadState, current_frame));
    F("cframe_current_frame", -1);
#elif PY_VERSION_HEX >= 0x030B0000
    F("tstate_frame", offsetof(PyThreadState, cframe));
    F("cframe_current_frame", offsetof(_PyCFrame, current_frame));
#else
    F("tstate_frame", offsetof(PyThreadState, frame));
    F("cframe_current_frame", -1);
#endif
#if PY_VERSION_HEX >= 0x030D0000
    F("frame_code", offsetof(_PyInterpreterFrame, f_executable));
    F("frame_previous", offsetof(_PyInterpreterFrame, previous));
    F("frame_instr", offsetof(_PyInterpreterFrame, instr_ptr));
    F("frame_owner", offsetof(_PyInterpreterFrame, owner));
#elif PY_VERSION_HEX >= 0x030B0000
    F("frame_code", offsetof(_PyInterpreterFrame, f_code));
    F("frame_previous", offsetof(_PyInterpreterFrame, previous));
    F("frame_instr", offsetof(_PyInterpreterFrame, prev_instr));
#if PY_VERSION_HEX >= 0x030C0000
    F("frame_owner", offsetof(_PyInterpreterFrame, owner));
#else
    F("frame_owner", -1); /* 3.11 has no C-stack shim frames to skip */
#endif
#else
    F("frame_code", offsetof(PyFrameObject, f_code));
    F("frame_previous", offsetof(PyFrameObject, f_back));
    F("frame_instr", offsetof(PyFrameObject, f_lasti));
    F("frame_owner", -1);
#endif
    F("code_filename", offsetof(PyCodeObject, co_filename));
    F("code_name", offsetof(PyCodeObject, co_name));
#if PY_VERSION_HEX >= 0x030B0000
    F("code_qualname", offsetof(PyCodeObject, co_qualname));
    F("code_adaptive", offsetof(PyCodeObject, co_code_adaptive));
#else
    F("code_qualname", -1);
    F("code_adaptive", -1);
#endif
    F("code_linetable", offsetof(PyCodeObject, co_linetable));
    F("code_firstlineno", offsetof(PyCodeObject, co_firstlineno));
    F("object_type", offsetof(PyObject, ob_type));
    F("bytes_size", offsetof(PyVarObject, ob_size));
    F("bytes_data", offsetof(PyBytesObject, ob_sval));
    F("unicode_length", offsetof(PyASCIIObject, length));
    F("unicode_state", offsetof(PyASCIIObject, state));
    F("unicode_ascii_data", sizeof(PyASCIIObject));
    printf("    \"unicode_compact_data\": %ld\n", (long)sizeof(PyCompactUnicodeObject));
    printf("  }");
    return 0;
}
