/**
 * Parameter initialisation from a counter-based generator ({@link org.moe4j.core.init.ParamInit}): the
 * same seed gives the same weights on every backend and for every expert-parallel world size.
 */
package org.moe4j.core.init;
