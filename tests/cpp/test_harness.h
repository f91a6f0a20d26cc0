// A minimal assertion harness for the C++ unit tests (no test framework dependency).
#pragma once

#include <cmath>
#include <cstdio>

namespace meshrec_test {
inline int failures = 0;
}

#define EXPECT_TRUE(condition)                                                          \
  do {                                                                                  \
    if (!(condition)) {                                                                 \
      std::fprintf(stderr, "%s:%d: expected %s\n", __FILE__, __LINE__, #condition);     \
      ++meshrec_test::failures;                                                         \
    }                                                                                   \
  } while (0)

#define EXPECT_NEAR(a, b, tolerance)                                                          \
  do {                                                                                        \
    const double value_a = (a), value_b = (b);                                                \
    if (!(std::fabs(value_a - value_b) <= (tolerance))) {                                     \
      std::fprintf(stderr, "%s:%d: %s = %.17g vs %s = %.17g (tolerance %g)\n", __FILE__,      \
                   __LINE__, #a, value_a, #b, value_b, static_cast<double>(tolerance));       \
      ++meshrec_test::failures;                                                               \
    }                                                                                         \
  } while (0)

#define TEST_RESULT()                                                             \
  (meshrec_test::failures == 0 ? (std::printf("all checks passed\n"), 0)          \
                               : (std::fprintf(stderr, "%d checks failed\n", meshrec_test::failures), 1))
