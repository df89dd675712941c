#include "config.h"
#include "mp_test.h"
static const struct mp_test_case tests[] = { MP_TEST_END };
int main(void) { mp_test_init("test_lock", 60); return mp_test_main("lock", tests); }
