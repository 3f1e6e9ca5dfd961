// Stub: see native/shim/gloo/README.md. ProcessGroupGloo.hpp needs nothing from it.
#pragma once
